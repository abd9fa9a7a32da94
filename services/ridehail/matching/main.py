"""Matching process: two consumers (locations; ride requests + ride events), the assignment ticker,
an outbox relay, and a small HTTP server with /healthz, /readyz, /metrics and /stats."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import FastAPI

from ridehail.common.batch_consumer import BatchConsumer
from ridehail.common.db import make_engine, make_sessionmaker, ping, wait_for_database
from ridehail.common.health import health_app, make_server
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.outbox import OutboxRelay
from ridehail.common.service import ServiceRun, run_services
from ridehail.common.topics import wait_for_topics
from ridehail.domain.events import (
    DriverLocation,
    EventDecoder,
)
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.matching.engine import MatchingEngine
from ridehail.matching.eta import make_eta_model
from ridehail.matching.locations import LOCATION_FETCH, tune_collector
from ridehail.matching.settings import MatchingSettings

log = get_logger(__name__)

# Requests and everything on the ride event topic (negotiation and facts), one contract.
RIDE_EVENT_TYPES = RIDE_REQUEST.events + RIDE_EVENT.events


class MatchingService:
    """Wires the engine to Kafka, Postgres and HTTP; ``run`` until ``stop`` is set."""

    def __init__(self, settings: MatchingSettings, instance: str = "matching") -> None:
        self.settings = settings
        self.instance = instance
        self.started = False
        self.engine_db = make_engine(settings.database_url or "", pool_size=5)
        self.sessions = make_sessionmaker(self.engine_db)
        self.dlq_producer = EventProducer(settings.bootstrap, f"{instance}-dlq")
        self.relay_producer = EventProducer(settings.bootstrap, f"{instance}-relay", **{"linger.ms": 0})
        self.relay = OutboxRelay(self.sessions, self.relay_producer, name=instance, poll_interval_s=0.5)
        self.engine = MatchingEngine(
            settings, self.sessions, make_eta_model(settings.matching_eta_model), on_outbox=self.relay.wake
        )
        group = settings.matching_group_id
        session = {"session.timeout.ms": settings.matching_session_timeout_ms}
        self.locations = BatchConsumer(
            bootstrap=settings.bootstrap,
            group_id=f"{group}-locations",
            topics=[DRIVER_LOCATION.name],
            decoder=EventDecoder(DriverLocation),
            handler=self.engine.handle_locations,
            dlq_producer=self.dlq_producer,
            name=f"{instance}-locations",
            batch_max=settings.matching_location_batch_max,
            batch_timeout_ms=settings.matching_location_batch_timeout_ms,
            **LOCATION_FETCH,
            **session,
        )
        self.rides = BatchConsumer(
            bootstrap=settings.bootstrap,
            group_id=f"{group}-rides",
            topics=[RIDE_REQUEST.name, RIDE_EVENT.name],
            decoder=EventDecoder(*RIDE_EVENT_TYPES),
            handler=self.engine.handle_rides,
            dlq_producer=self.dlq_producer,
            name=f"{instance}-rides",
            batch_max=500,
            batch_timeout_ms=settings.matching_ride_batch_timeout_ms,
            **{"fetch.wait.max.ms": 10},
            **session,
        )

    def stats(self) -> dict[str, Any]:
        return {
            "consumer_lag": int(self.locations.stats.lag + self.rides.stats.lag),
            "events_per_s": round(self.engine.meter.rate(), 1),
            "drivers_available": self.engine.presence.free,
            "drivers_present": self.engine.presence.present,
            "drivers_known": self.engine.presence.known,
            "drivers_silent_on_ride": len(self.engine.presence.silent_on_ride),
            "rides_waiting": self.engine.presence.waiting,
            "mode": self.engine.mode,
            "eta_model": self.engine.eta.name,
            "assigned": self.engine.assigned,
            "expired": self.engine.expired,
            "claim_conflicts": self.engine.claim_conflicts,
            "offers": self.engine.offer_stats.snapshot(),
            "dead_lettered": self.locations.stats.dead_lettered + self.rides.stats.dead_lettered,
            "outbox_published": self.relay.published,
            "partitions": {
                "locations": len(self.locations.stats.partitions),
                "rides": len(self.rides.stats.partitions),
            },
        }

    async def readiness(self) -> dict[str, bool]:
        return {"database": await ping(self.engine_db), "state_loaded": self.started}

    def http_app(self) -> FastAPI:
        app = health_app("matching", self.readiness)

        @app.get("/stats", summary="Live matching numbers (the map's stats panel)")
        async def stats() -> dict[str, Any]:
            return self.stats()

        return app

    async def _start_when_ready(self, stop: asyncio.Event) -> bool:
        """Wait (cancellably, one log line each) for Postgres and the broker, then load the state."""
        waiting = asyncio.create_task(wait_for_database(self.engine_db))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([waiting, stopped], return_when="FIRST_COMPLETED")
        if stop.is_set():
            waiting.cancel()
            return False
        stopped.cancel()
        if not await wait_for_topics(self.settings.bootstrap, stop):
            return False
        await self.engine.sweep_presence()  # Postgres answers; nothing else to load: matching keeps no state
        self.started = True
        return True

    async def _close_clients(self) -> None:
        """Flush and stop both producers off the event loop, then close the database pool."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.run_in_executor(None, self.dlq_producer.close, 5.0),
            loop.run_in_executor(None, self.relay_producer.close, 5.0),
        )
        await self.engine_db.dispose()

    async def run(self, stop: asyncio.Event) -> None:
        # Health endpoints first: /readyz answers 503 while Postgres or the broker is unreachable.
        server = make_server(self.http_app(), self.settings.host, self.settings.matching_port)
        http = asyncio.create_task(server.serve(), name="http")
        if not await self._start_when_ready(stop):
            server.should_exit = True
            await http
            await self._close_clients()
            return
        tune_collector()  # the location path's batches: see ridehail.matching.locations
        tasks = [
            asyncio.create_task(self.locations.run(stop), name="locations"),
            asyncio.create_task(self.rides.run(stop), name="rides"),
            asyncio.create_task(self.engine.run_ticker(stop), name="ticker"),
            asyncio.create_task(self.engine.run_offer_clock(stop), name="offer-clock"),
            asyncio.create_task(self.relay.run(stop), name="relay"),
            http,
        ]
        log.info(
            "matching_started",
            mode=self.engine.mode,
            eta_model=self.engine.eta.name,
            port=self.settings.matching_port,
        )
        try:
            done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
            for task in done:
                if task.get_name() != "http" and task.exception() is not None:
                    log.error("matching_task_failed", task=task.get_name(), error=repr(task.exception()))
        finally:
            stop.set()
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=15)
            await self._close_clients()


async def run(settings: MatchingSettings, stop: asyncio.Event) -> None:
    if not settings.database_url:
        from ridehail.common.postgres import resolve_database_url

        loop = asyncio.get_running_loop()
        url, _ = await loop.run_in_executor(None, lambda: resolve_database_url(settings, allow_embedded=False))
        settings = settings.model_copy(update={"database_url": url})
    await MatchingService(settings).run(stop)


SERVICE = ServiceRun("matching", MatchingSettings, run)  # what ``python -m ridehail.serve`` runs, alone or with others


def serve() -> None:
    run_services([SERVICE])
