"""Pricing process: one consumer (locations + ride requests) feeding the surge book, a ticker that
recomputes every cell and publishes the changes, and /healthz, /readyz, /metrics, /stats, /surge.

The book is in memory: a restart starts a fresh window (surge rebuilds within ``window_s``), but
the published multipliers are reloaded from Postgres (``surge_cells``) so nothing is re-announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ridehail.common.batch_consumer import BatchConsumer, Decoded, Rejected
from ridehail.common.db import make_engine, make_sessionmaker, ping, transaction
from ridehail.common.failures import describe
from ridehail.common.health import health_app, make_server
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.topics import wait_for_topics
from ridehail.domain.events import DriverLocation, EventDecoder, RideRequested, SurgeChanged, encode, now_ms
from ridehail.domain.surge import SurgeBook, SurgeChange
from ridehail.domain.topics import DRIVER_LOCATION, PRICING_SURGE, RIDE_REQUEST
from ridehail.pricing.settings import PricingSettings

log = get_logger(__name__)

EVENTS = Counter("ridehail_pricing_events_total", "Events applied to the surge book", ["type"])
CHANGES = Counter("ridehail_pricing_surge_changes_total", "Surge multiplier changes published")
RECOMPUTE = Histogram(
    "ridehail_pricing_recompute_seconds",
    "Time to recompute every cell",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
SURGING = Gauge("ridehail_pricing_cells_surging", "Cells with a multiplier above 1")


class SurgeHandler:
    """The consumer's batch handler: applies events to the book (memory only, nothing to commit)."""

    def __init__(self, book: SurgeBook) -> None:
        self.book = book
        self.applied = 0

    async def __call__(self, batch: list[Decoded]) -> list[Rejected]:
        try:
            self.apply([d.event for d in batch])
            return []
        except Exception:  # one event raised: apply them one by one (adding is idempotent) to find it
            pass
        rejected: list[Rejected] = []
        for item in batch:
            try:
                self.apply([item.event])
            except Exception as exc:
                rejected.append(Rejected(item.message, f"could not be applied: {describe(exc)}"))
        return rejected

    def apply(self, events: list[Any], received_ms: int | None = None) -> None:
        """Add ``events`` to the book; an event stamped after its arrival counts from the arrival."""
        book = self.book
        now = now_ms() if received_ms is None else received_ms
        n_loc = n_req = 0
        for e in events:
            if type(e) is DriverLocation:
                book.add_location(e.driver_id, e.seq, e.ts, e.lat, e.lon, e.status == "available", now)
                n_loc += 1
            elif type(e) is RideRequested:
                book.add_request(e.ride_id, e.ts, e.pickup.lat, e.pickup.lon, now)
                n_req += 1
        self.applied += n_loc + n_req
        if n_loc:
            EVENTS.labels("driver.location").inc(n_loc)
        if n_req:
            EVENTS.labels("ride.requested").inc(n_req)


def change_event(change: SurgeChange, resolution: int, ts: int) -> SurgeChanged:
    return SurgeChanged(
        ts=ts,
        cell=change.cell,
        resolution=resolution,
        multiplier=change.multiplier,
        previous=change.previous,
        demand=change.demand,
        supply=change.supply,
    )


UPSERT_SURGE = text(
    "INSERT INTO surge_cells (cell, multiplier, demand, supply, ts, updated_at) "
    "VALUES (:cell, :multiplier, :demand, :supply, :ts, now()) "
    "ON CONFLICT (cell) DO UPDATE SET multiplier = EXCLUDED.multiplier, demand = EXCLUDED.demand, "
    "supply = EXCLUDED.supply, ts = EXCLUDED.ts, updated_at = now() WHERE surge_cells.ts <= EXCLUDED.ts"
)


class PricingService:
    def __init__(self, settings: PricingSettings) -> None:
        self.settings = settings
        self.book = SurgeBook(policy=settings.policy(), resolution=settings.pricing_resolution)
        self.handler = SurgeHandler(self.book)
        self.engine_db = make_engine(settings.database_url, pool_size=2) if settings.database_url else None
        self.sessions = make_sessionmaker(self.engine_db) if self.engine_db is not None else None
        self.producer = EventProducer(settings.bootstrap, "pricing")
        self.consumer = BatchConsumer(
            bootstrap=settings.bootstrap,
            group_id=settings.pricing_group_id,
            topics=[DRIVER_LOCATION.name, RIDE_REQUEST.name],
            decoder=EventDecoder(DriverLocation, RideRequested),
            handler=self.handler,
            dlq_producer=self.producer,
            name="pricing",
            batch_max=5000,
            batch_timeout_ms=100,
            # surge is recomputed every few seconds: an idle fetch may wait long (each empty fetch
            # costs the embedded broker CPU, docs/performance.md)
            **{"fetch.wait.max.ms": 500},
        )
        self.started = False
        self.published = 0
        self.last_recompute_ms = 0.0

    # -- the tick --------------------------------------------------------------------------------
    async def tick(self, now: int | None = None) -> list[SurgeChange]:
        """Recompute every cell; publish and persist the changes. Returns them."""
        now = now_ms() if now is None else now
        started = time.perf_counter()
        changes = self.book.recompute(now)
        self.last_recompute_ms = (time.perf_counter() - started) * 1000
        RECOMPUTE.observe(self.last_recompute_ms / 1000)
        SURGING.set(len(self.book.snapshot()))
        if not changes:
            return changes
        resolution = self.book.resolution
        for change in changes:
            self.producer.produce(PRICING_SURGE.name, encode(change_event(change, resolution, now)), key=change.cell)
        await self.producer.flush_async(10.0)
        self.published += len(changes)
        CHANGES.inc(len(changes))
        log.info("surge_changed", cells=len(changes), surging=len(self.book.snapshot()))
        await self._persist(changes, now)
        return changes

    async def _persist(self, changes: list[SurgeChange], ts: int) -> None:
        if self.sessions is None or not self.settings.pricing_persist:
            return
        rows = [
            {"cell": c.cell, "multiplier": c.multiplier, "demand": c.demand, "supply": c.supply, "ts": ts}
            for c in changes
        ]
        try:
            async with transaction(self.sessions) as session:
                await session.execute(UPSERT_SURGE, rows)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("surge_persist_failed", error=str(exc)[:200], cells=len(rows))

    async def load_published(self) -> int:
        """Reload the multipliers published before a restart (so they are not re-announced)."""
        if self.sessions is None:
            return 0
        try:
            async with transaction(self.sessions) as session:
                rows = (await session.execute(text("SELECT cell, multiplier FROM surge_cells"))).all()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("surge_load_failed", error=str(exc)[:200])
            return 0
        self.book.restore({r.cell: r.multiplier for r in rows if len(r.cell) > 0})
        return len(rows)

    async def run_ticker(self, stop: asyncio.Event) -> None:
        interval = self.settings.pricing_tick_ms / 1000
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            try:
                await self.tick()
            except Exception as exc:  # a broker hiccup must not end the ticker
                log.warning("surge_tick_failed", error=repr(exc)[:300])

    # -- HTTP ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "events_applied": self.handler.applied,
            "consumer_lag": self.consumer.stats.lag,
            "cells_counted": len(self.book.last_counts),
            "cells_surging": len(self.book.snapshot()),
            "changes_published": self.published,
            "recompute_ms": round(self.last_recompute_ms, 3),
            "resolution": self.book.resolution,
            "window_s": self.book.policy.window_s,
        }

    async def readiness(self) -> dict[str, bool]:
        checks = {"consumer_started": self.started}
        if self.engine_db is not None:
            checks["database"] = await ping(self.engine_db)
        return checks

    def http_app(self) -> FastAPI:
        app = health_app("pricing", self.readiness)

        @app.get("/stats", summary="Live pricing numbers")
        async def stats() -> dict[str, Any]:
            return self.stats()

        @app.get("/surge", summary="Current multiplier of every surging H3 cell")
        async def surge() -> dict[str, Any]:
            return {"resolution": self.book.resolution, "cells": self.book.snapshot()}

        return app

    async def run(self, stop: asyncio.Event) -> None:
        server = make_server(self.http_app(), self.settings.host, self.settings.pricing_port)
        http = asyncio.create_task(server.serve(), name="http")
        try:
            if not await wait_for_topics(self.settings.bootstrap, stop):
                return
            restored = await self.load_published()
            self.started = True
            log.info("pricing_started", port=self.settings.pricing_port, restored_cells=restored)
            tasks = [
                asyncio.create_task(self.consumer.run(stop), name="consumer"),
                asyncio.create_task(self.run_ticker(stop), name="ticker"),
            ]
            done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
            for task in done:
                if task.get_name() in ("consumer", "ticker") and task.exception() is not None:
                    log.error("pricing_task_failed", task=task.get_name(), error=repr(task.exception()))
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=15)
        finally:
            stop.set()
            server.should_exit = True
            await http
            await asyncio.to_thread(self.producer.close, 5)  # off the loop: it may share the process
            if self.engine_db is not None:
                await self.engine_db.dispose()
