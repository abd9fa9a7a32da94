"""Process entry point shared by every service: settings, logging, signals, graceful stop.

One process usually runs one service. ``ridehail up`` can run light services together in one
process (``RIDEHAIL_SHARED_PROCESSES``, e.g. ``auth+pricing``): each keeps its own settings, port,
state and log field ``service``, and they share the interpreter, the imported packages and the
event loop. When one of them ends by itself (a crash, an early return, its own stop), the others
are stopped too and the process exits 1, so the supervisor restarts the whole group. (A service
alone keeps its own exit: a crash's traceback and code, 0 when it stopped itself.)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ridehail.common.logging import configure_logging, get_logger
from ridehail.common.settings import CommonSettings, load_settings


@dataclass(frozen=True, slots=True)
class ServiceRun:
    """What a service's ``main`` module hands the process runner: its name, settings and coroutine."""

    name: str
    settings_cls: type[CommonSettings]
    run: Callable[[Any, asyncio.Event], Awaitable[None]]


STOP_GRACE_S = 7.0  # a group's services get this long to stop (the supervisor kills after 8 s)


def run_services(services: Sequence[ServiceRun]) -> None:
    """Load every service's settings (exit with a clear message if one is invalid), then run them
    in this process until SIGINT/SIGTERM (or until one ends).

    Each service gets its own stop event (a service may set it itself when it fails); a signal
    sets them all. In a group, a service that ends without a signal (it returned, raised, or set
    its own event) is logged at once and stops the others; the process then exits 1.
    """
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
        try:
            await service.run(settings, stop)
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:  # uvicorn exits (SystemExit) when it cannot bind its port
            if single:
                raise
            log.exception("service_failed", error=repr(exc)[:300])
            raise RuntimeError(f"{service.name} failed: {exc!r}"[:300]) from exc
        log.info("service_stopped")

    async def main() -> None:
        nonlocal failed
        loop = asyncio.get_running_loop()
        if single:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await one(services[0], loaded[0], stop)
            return
        asked = asyncio.Event()  # a signal: every service stops, and that is a clean end
        stops = [asyncio.Event() for _ in services]

        def stop_all() -> None:
            for event in stops:
                event.set()

        def on_signal() -> None:
            asked.set()
            stop_all()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        tasks = [
            asyncio.create_task(one(s, settings, stop), name=s.name)
            for s, settings, stop in zip(services, loaded, stops, strict=True)
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not asked.is_set():  # a service ended without being asked to: stop its neighbours, exit 1
            failed = True
            ended = ", ".join(t.get_name() for t in done)
            get_logger("service").error("service_ended_unasked", services=ended, stopping="the whole process")
        stop_all()
        _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in late:
            get_logger("service").error("service_stop_timed_out", services=task.get_name(), after_s=STOP_GRACE_S)
            task.cancel()
        if late:
            failed = True
            await asyncio.wait(late, timeout=1.0)
        for task in tasks:  # each failure was logged by its service; mark them retrieved
            if task.done() and not task.cancelled():
                task.exception()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main())
    else:
        uvloop.run(main())
    if failed:
        sys.exit(1)
