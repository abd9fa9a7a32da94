"""Process entry point shared by every service: settings, logging, signals, graceful stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ridehail.common.logging import configure_logging, get_logger
from ridehail.common.settings import CommonSettings, load_settings

S = TypeVar("S", bound=CommonSettings)


def run_service(name: str, settings_cls: type[S], run: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Load settings (exit with a clear message if invalid), then run until SIGINT/SIGTERM."""
    settings = load_settings(settings_cls)
    configure_logging(settings.log_level, settings.log_format, service=name)
    log = get_logger(name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("service_starting")
        await run(settings, stop)
        log.info("service_stopped")

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main())
