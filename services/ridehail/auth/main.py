"""``ridehail serve auth``: the auth REST service on ``RIDEHAIL_AUTH_PORT`` (8001)."""

from __future__ import annotations

import asyncio

from ridehail.auth.settings import AuthSettings
from ridehail.common.service import ServiceRun, run_services


async def run(settings: AuthSettings, stop: asyncio.Event) -> None:
    from ridehail.auth.app import create_app
    from ridehail.common.health import make_server
    from ridehail.common.postgres import resolve_database_url

    if not settings.database_url:
        url, _ = await asyncio.to_thread(resolve_database_url, settings, False)
        settings = settings.model_copy(update={"database_url": url})
    server = make_server(create_app(settings), settings.host, settings.auth_port)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving


SERVICE = ServiceRun("auth", AuthSettings, run)  # what ``python -m ridehail.serve`` runs, alone or with others


def serve() -> None:
    run_services([SERVICE])
