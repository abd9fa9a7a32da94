"""`ridehail serve pricing`: the surge pricing service."""

from __future__ import annotations

import asyncio

from ridehail.common.logging import get_logger
from ridehail.common.service import ServiceRun, run_services
from ridehail.pricing.settings import PricingSettings

log = get_logger(__name__)


async def run(settings: PricingSettings, stop: asyncio.Event) -> None:
    from ridehail.pricing.service import PricingService

    if not settings.database_url:
        from ridehail.common.postgres import DatabaseUnavailable, resolve_database_url

        try:
            url, _ = await asyncio.to_thread(resolve_database_url, settings, False)
            settings = settings.model_copy(update={"database_url": url})
        except DatabaseUnavailable as exc:
            log.warning("pricing_without_database", reason=str(exc)[:200])
    await PricingService(settings).run(stop)


SERVICE = ServiceRun("pricing", PricingSettings, run)  # what ``python -m ridehail.serve`` runs, alone or with others


def serve() -> None:
    run_services([SERVICE])
