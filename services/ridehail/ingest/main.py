"""``ridehail serve ingest``: the ingestion edge on ``RIDEHAIL_INGEST_PORT`` (8005)."""

from __future__ import annotations

import asyncio

from ridehail.common.service import run_service
from ridehail.ingest.settings import IngestSettings


async def run(settings: IngestSettings, stop: asyncio.Event) -> None:
    from ridehail.common.health import make_server
    from ridehail.ingest.app import create_app

    if settings.ingest_mode == "rest" and not settings.database_url:
        from ridehail.common.postgres import resolve_database_url

        url, _ = await asyncio.to_thread(resolve_database_url, settings, False)
        settings = settings.model_copy(update={"database_url": url})
    if settings.ingest_mode == "rest-kafka":
        from ridehail.common.logging import get_logger
        from ridehail.common.topics import ensure_topics

        try:
            await asyncio.to_thread(ensure_topics, settings.bootstrap, None, 10.0)
        except Exception as exc:  # the broker may come later: requests answer 503 until then
            get_logger(__name__).warning("topics_not_ensured", error=repr(exc)[:200])
    server = make_server(create_app(settings), settings.host, settings.ingest_port)
    server.config.backlog = 4096
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving


def serve() -> None:
    run_service("ingest", IngestSettings, run)
