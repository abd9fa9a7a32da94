"""Run services for tests and benchmarks: matching in this event loop or as a child process, the
rides API as an ASGI app, and polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ridehail.harness.tokens import LocalSigner


@contextlib.asynccontextmanager
async def running_matching(settings: Any) -> AsyncIterator[Any]:
    """The matching service running in this event loop until the block ends (state loaded first)."""
    from ridehail.matching.main import MatchingService

    service = MatchingService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        assert await wait_until(lambda: service.started, 30), "matching did not start within 30 s"
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passes; returns the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        ok = await result if asyncio.iscoroutine(result) else result
        if ok or time.monotonic() > deadline:
            return bool(ok)
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def gateway_api(
    database_url: str, verifier: Any, hub: Any = None, **settings_overrides: Any
) -> AsyncIterator[Any]:
    """The gateway's REST routers (rides, quotes, drivers) as an ASGI app on ``database_url``, with
    the gateway's own context and error handlers; tokens are checked by ``verifier``."""
    from fastapi import FastAPI

    from ridehail.common.db import make_engine, make_sessionmaker
    from ridehail.common.http_errors import install_error_handlers
    from ridehail.gateway.context import GatewayContext
    from ridehail.gateway.drivers_api import router as drivers_router
    from ridehail.gateway.quotes_api import router as quotes_router
    from ridehail.gateway.rides_api import router as rides_router
    from ridehail.gateway.settings import GatewaySettings

    engine = make_engine(database_url)
    app = FastAPI()
    app.include_router(rides_router)
    app.include_router(quotes_router)
    app.include_router(drivers_router)
    install_error_handlers(app)
    settings = GatewaySettings(database_url=database_url, **settings_overrides)
    app.state.ctx = GatewayContext(settings, make_sessionmaker(engine), verifier, producer=None, hub=hub)
    try:
        yield app
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def rides_app(database_url: str, signer: LocalSigner, **settings_overrides: Any) -> AsyncIterator[Any]:
    """The gateway's REST API verifying tokens of a local signer."""
    async with gateway_api(database_url, signer.verifier(), **settings_overrides) as app:
        yield app


def matching_process(
    bootstrap: str, database_url: str, port: int, log_path: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """Start ``ridehail serve matching`` with its settings in the environment."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(
        {
            "RIDEHAIL_KAFKA_BOOTSTRAP": bootstrap,
            "RIDEHAIL_DATABASE_URL": database_url,
            "RIDEHAIL_MATCHING_PORT": str(port),
            "RIDEHAIL_LOG_FORMAT": "json",
            "RIDEHAIL_MATCHING_ETA_MODEL": "straight_line",
        }
    )
    env.update({f"RIDEHAIL_{k.upper()}": v for k, v in settings.items()})
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "ridehail.cli", "serve", "matching"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def matching_stats(port: int) -> dict[str, Any] | None:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(f"http://127.0.0.1:{port}/stats")
            return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None
