"""The matching engine: applies consumed batches to Postgres (one transaction each) and keeps the
in-memory view (H3 driver index, waiting rides) in step with what was committed.

Postgres is the source of truth. The in-memory index only proposes candidates; a driver becomes
assigned through one conditional UPDATE, so a stale index or a second matching instance can cost
a retry, never a double booking. The view is rebuilt from Postgres at start, every
``matching_refresh_s``, and after any failed batch. What each event does lives in
:mod:`~ridehail.matching.ride_events`, :mod:`~ridehail.matching.assigning` and
:mod:`~ridehail.matching.offering`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.batch_consumer import Decoded, Rejected
from ridehail.common.db import transaction
from ridehail.common.failures import describe, is_infrastructure_failure, is_input_failure
from ridehail.common.logging import get_logger
from ridehail.domain.events import DriverLocation, LatLon, RideCancelled, event_type
from ridehail.domain.geo import SERVICE_AREA
from ridehail.domain.lifecycle import IllegalTransition
from ridehail.matching import metrics as m
from ridehail.matching.assigning import assign_batched, assign_greedy, expire_waiting
from ridehail.matching.eta import EtaModel
from ridehail.matching.index import DriverIndex
from ridehail.matching.offering import time_out_offers
from ridehail.matching.ride_events import apply_ride_event
from ridehail.matching.settings import MatchingSettings
from ridehail.matching.state import After, MatchingState, WaitingRide
from ridehail.matching.validation import is_replayed, unstorable
from ridehail.stores import drivers, offers, rides

log = get_logger(__name__)


class MatchingEngine(MatchingState):
    def __init__(
        self,
        settings: MatchingSettings,
        session_factory: async_sessionmaker[AsyncSession],
        eta: EtaModel,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(settings=settings, eta=eta, index=DriverIndex(settings.matching_h3_resolution))
        self._factory = session_factory
        self._on_outbox = on_outbox or (lambda: None)
        self._lock = asyncio.Lock()  # rides handler and ticker never interleave their assignments
        self._loaded_once = False

    # -- state from Postgres -----------------------------------------------------------------------
    async def rebuild(self) -> None:
        """Re-read available drivers and waiting rides (start, periodic refresh, after a failure)."""
        # Read outside the lock (ride handling goes on meanwhile); swap under it. Anything that
        # changed in between is at worst a claim that fails or a ride that is no longer waiting.
        async with transaction(self._factory) as session:
            known = await drivers.load_drivers(session)
            waiting = await rides.load_waiting_rides(session)
            excluded = await offers.offered_drivers(session, [r["ride_id"] for r in waiting])
        async with self._lock:
            self.index.clear()
            self.offer_drivers = {d.driver_id for d in known if d.accepts_offers}
            for d in known:
                if d.status == "available" and d.current_ride_id is None:
                    self.index.upsert(d.driver_id, d.lat, d.lon)
            self.waiting = {
                r["ride_id"]: WaitingRide(
                    r["ride_id"],
                    r["rider_id"],
                    LatLon(r["pickup_lat"], r["pickup_lon"]),
                    LatLon(r["dropoff_lat"], r["dropoff_lon"]),
                    int(r["requested_ms"]),
                    excluded.get(r["ride_id"], set()),
                )
                for r in waiting
            }
            self.dirty = False
            self.update_gauges()
        report = log.debug if self._loaded_once else log.info  # the periodic refresh stays quiet
        report("matching_state_loaded", drivers_available=len(self.index), rides_waiting=len(self.waiting))
        self._loaded_once = True

    # -- locations ---------------------------------------------------------------------------------
    async def handle_locations(self, batch: list[Decoded]) -> list[Rejected]:
        rejected: list[Rejected] = []
        newest: dict[str, DriverLocation] = {}
        for item in batch:
            ping = item.event
            problem = unstorable(item)
            if problem:
                rejected.append(Rejected(item.message, problem))
                continue
            if not isinstance(ping, DriverLocation):
                rejected.append(Rejected(item.message, f"unexpected event {event_type(type(ping))} on locations"))
                continue
            if not SERVICE_AREA.contains(ping.lat, ping.lon):
                rejected.append(Rejected(item.message, f"position outside the service area: {ping.lat},{ping.lon}"))
                continue
            previous = newest.get(ping.driver_id)
            if previous is not None and ping.seq < previous.seq:
                rejected.append(
                    Rejected(item.message, f"backwards seq for {ping.driver_id}: {ping.seq} after {previous.seq}")
                )
                continue
            newest[ping.driver_id] = ping
        pings = list(newest.values())
        try:
            async with transaction(self._factory) as session:
                changed = await drivers.upsert_locations(session, pings)
        except Exception:
            self.dirty = True
            raise
        m.STALE_PINGS.inc(len(pings) - len(changed))
        for row in changed:
            if row.accepts_offers:
                self.offer_drivers.add(row.driver_id)
            else:
                self.offer_drivers.discard(row.driver_id)
            if row.status == "available" and row.current_ride_id is None:
                self.index.upsert(row.driver_id, row.lat, row.lon)
            else:
                self.index.remove(row.driver_id)
        m.EVENTS.labels("location").inc(len(batch))
        self.meter.add(len(batch))
        return rejected

    # -- rides -------------------------------------------------------------------------------------
    async def handle_rides(self, batch: list[Decoded]) -> list[Rejected]:
        rejected: list[Rejected] = []
        after: After = []
        async with self._lock:
            try:
                async with transaction(self._factory) as session:
                    for item in batch:
                        problem = unstorable(item)
                        if problem:
                            rejected.append(Rejected(item.message, problem))
                            continue
                        mark = len(after)
                        try:
                            # A savepoint per event: one event that cannot be applied is dead-lettered
                            # instead of failing (and endlessly retrying) the whole batch.
                            async with session.begin_nested():
                                await apply_ride_event(session, self, item.event, after, is_replayed(item))
                        except IllegalTransition as exc:
                            del after[mark:]
                            rejected.append(Rejected(item.message, exc.reason))
                        except Exception as exc:
                            if is_infrastructure_failure(exc):
                                raise  # the database is away: the whole batch is retried, nothing rejected
                            # Whatever else it raised (the database refused a value, a number too large
                            # to quantise, a bug), this event cannot be applied: dead-letter it and go on.
                            # The rejection stands only if the transaction commits, i.e. the database
                            # was reachable after this event failed.
                            del after[mark:]
                            self.dirty = True  # in-memory moves of this event are re-read from Postgres
                            what = "refused by the database" if is_input_failure(exc) else "could not be applied"
                            rejected.append(Rejected(item.message, f"{what}: {describe(exc)}"))
            except Exception:
                self.dirty = True
                raise
            for action in after:
                action()
            self.update_gauges()
        m.EVENTS.labels("ride").inc(len(batch))
        self.meter.add(len(batch))
        self._on_outbox()
        return rejected

    # -- rounds ------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """One round: time out offers, expire old requests, assign waiting rides."""
        if self.dirty:
            await self.rebuild()
        after: After = []
        async with self._lock:
            try:
                async with transaction(self._factory) as session:
                    if self.settings.matching_offers:
                        await time_out_offers(session, self, after)
                    if self.waiting:
                        await expire_waiting(session, self, after)
                    if self.waiting and self.mode == "batched":
                        await assign_batched(session, self, after)
                    elif self.waiting:
                        for ride in list(self.waiting.values()):
                            await assign_greedy(session, self, ride, after)
            except Exception:
                self.dirty = True
                raise
            for action in after:
                action()
            self.update_gauges()
        if after:
            self._on_outbox()

    async def cancel_stale_assignments(self) -> int:
        """Safety net: a driver that never reports arriving (its simulator restarted, it refused the
        ride...) must not stay booked forever. The ride ends ``cancelled`` by the system, the driver
        is released, and a ``RideCancelled`` event tells everyone."""
        timeout_s = self.settings.matching_pickup_timeout_s
        reason = f"driver did not reach the pickup within {timeout_s:g} s"
        after: After = []
        async with self._lock, transaction(self._factory) as session:
            stale = await rides.cancel_stale_assignments(session, timeout_s, reason)
            for row in stale:
                event = RideCancelled(
                    ride_id=row["ride_id"],
                    rider_id=row["rider_id"],
                    by="system",
                    reason=reason,
                    driver_id=row["driver_id"],
                )
                await rides.publish(session, event)
                if row["driver_id"]:
                    await self.release(session, row["driver_id"], row["ride_id"], after)
        for action in after:
            action()
        if stale:
            log.warning("stale_assignments_cancelled", count=len(stale), reason=reason)
            self._on_outbox()
        return len(stale)

    async def run_ticker(self, stop: asyncio.Event) -> None:
        """Assignment rounds every batch window; a full re-read from Postgres every refresh period."""
        window_s = self.settings.matching_batch_window_ms / 1000
        last_refresh = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=window_s)
            if stop.is_set():
                return
            try:
                if time.monotonic() - last_refresh >= self.settings.matching_refresh_s:
                    self.dirty = True
                    last_refresh = time.monotonic()
                    await self.cancel_stale_assignments()
                await self.tick()
            except Exception as exc:
                log.warning("matching_tick_failed", error=repr(exc)[:300])
