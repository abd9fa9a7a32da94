"""Process entry point shared by every service: settings, logging, signals, graceful stop.

One process usually runs one service. ``ridehail up`` can run light services together in one
process (``RIDEHAIL_SHARED_PROCESSES``, e.g. ``auth+pricing``): each keeps its own settings, port,
state and log field ``service``, and they share the interpreter, the imported packages and the
event loop. When one of them ends by itself (a crash, an early return), the others are stopped
too and the process exits non-zero, so the supervisor restarts the whole group.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from ridehail.common.logging import configure_logging, get_logger
from ridehail.common.settings import CommonSettings, load_settings

S = TypeVar("S", bound=CommonSettings)


@dataclass(frozen=True, slots=True)
class ServiceRun:
    """What a service's ``main`` module hands the process runner: its name, settings and coroutine."""

    name: str
    settings_cls: type[CommonSettings]
    run: Callable[[Any, asyncio.Event], Awaitable[None]]


def run_service(name: str, settings_cls: type[S], run: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    """Load settings (exit with a clear message if invalid), then run until SIGINT/SIGTERM."""
    run_services([ServiceRun(name, settings_cls, run)])


def run_services(services: Sequence[ServiceRun]) -> None:
    """Run one or several services in this process until SIGINT/SIGTERM (or until one ends)."""
    if not services:
        raise ValueError("no service to run")
    loaded = [load_settings(s.settings_cls) for s in services]  # every one is checked before any starts
    single = len(services) == 1
    configure_logging(loaded[0].log_level, loaded[0].log_format, service=services[0].name if single else None)
    failed = False

    async def one(service: ServiceRun, settings: CommonSettings, stop: asyncio.Event) -> None:
        if not single:  # this task's context (and every task it starts) only: each line names its service
            structlog.contextvars.bind_contextvars(service=service.name)
        log = get_logger(service.name)
        log.info("service_starting")
        await service.run(settings, stop)
        log.info("service_stopped")

    async def main() -> None:
        nonlocal failed
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if single:
            await one(services[0], loaded[0], stop)
            return
        tasks = [
            asyncio.create_task(one(s, settings, stop), name=s.name)
            for s, settings in zip(services, loaded, strict=True)
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():  # a service ended without being asked to: stop its neighbours, exit non-zero
            failed = True
            ended = ", ".join(t.get_name() for t in done)
            get_logger("service").error("service_ended_unasked", services=ended, stopping="the whole process")
            stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        if errors:
            raise errors[0]

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main())
    else:
        uvloop.run(main())
    if failed:
        sys.exit(1)
