"""``ridehail serve ingest``: the ingestion edge on ``RIDEHAIL_INGEST_PORT`` (8005).

With ``RIDEHAIL_INGEST_WORKERS`` = n > 1 the first process binds the port with ``SO_REUSEPORT``
and starts n - 1 copies of itself as its own children (``RIDEHAIL_INGEST_WORKER_INDEX`` 1..n-1),
which bind the same port the same way: the kernel spreads new connections over the n listening
sockets. Every worker is a descendant of the first process (a supervisor that measures the
edge's CPU counts the process tree), stops when it does, and exits if it is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys

from ridehail.common.logging import get_logger
from ridehail.common.service import ServiceRun, run_services
from ridehail.ingest.settings import IngestSettings

log = get_logger(__name__)


def _reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _start_workers(settings: IngestSettings) -> list[subprocess.Popen[bytes]]:
    children = []
    for index in range(1, settings.ingest_workers):
        env = {**os.environ, "RIDEHAIL_INGEST_WORKER_INDEX": str(index)}
        env["RIDEHAIL_INGEST_PORT"] = str(settings.ingest_port)
        if settings.database_url:
            env["RIDEHAIL_DATABASE_URL"] = settings.database_url
        children.append(subprocess.Popen([sys.executable, "-m", "ridehail.cli", "serve", "ingest"], env=env))
    log.info("ingest_workers_started", workers=settings.ingest_workers, pids=[c.pid for c in children])
    return children


def _stop_workers(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        with contextlib.suppress(OSError):
            child.terminate()
    for child in children:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


async def _orphaned(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("ingest_worker_orphaned", parent=parent)


async def run(settings: IngestSettings, stop: asyncio.Event) -> None:
    from ridehail.common.health import make_server
    from ridehail.ingest.app import create_app

    if settings.ingest_mode == "rest" and not settings.database_url:
        from ridehail.common.postgres import resolve_database_url

        url, _ = await asyncio.to_thread(resolve_database_url, settings, False)
        settings = settings.model_copy(update={"database_url": url})
    if settings.ingest_mode == "rest-kafka" and settings.ingest_worker_index == 0:
        from ridehail.common.topics import ensure_topics

        try:
            await asyncio.to_thread(ensure_topics, settings.bootstrap, None, 10.0)
        except Exception as exc:  # the broker may come later: requests answer 503 until then
            log.warning("topics_not_ensured", error=repr(exc)[:200])
    server = make_server(create_app(settings), settings.host, settings.ingest_port)
    server.config.backlog = 4096
    shared = settings.ingest_workers > 1 or settings.ingest_worker_index > 0
    sockets = [_reuseport_socket(settings.host, settings.ingest_port)] if shared else None
    children = _start_workers(settings) if settings.ingest_workers > 1 and settings.ingest_worker_index == 0 else []
    serving = asyncio.create_task(server.serve(sockets=sockets))
    waiters = {serving, asyncio.create_task(stop.wait())}
    if settings.ingest_worker_index > 0:
        waiters.add(asyncio.create_task(_orphaned(os.getppid())))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        for task in waiters:
            task.cancel()
        if children:
            await asyncio.to_thread(_stop_workers, children)


SERVICE = ServiceRun("ingest", IngestSettings, run)  # what ``python -m ridehail.serve`` runs, alone or with others


def serve() -> None:
    run_services([SERVICE])
