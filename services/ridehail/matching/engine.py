"""The matching engine: applies consumed batches to Postgres (one transaction each), runs the
assignment rounds, withdraws offers when they are due, and sweeps presence.

Postgres is the source of truth and the only shared state. Candidates are read from the drivers
table in the transaction that claims one (:mod:`~ridehail.matching.candidates`), so every
instance sees the whole fleet whichever location partitions it consumes; a driver becomes
assigned through one conditional UPDATE, so a second instance can cost a retry, never a double
booking; waiting rides are taken with ``FOR UPDATE SKIP LOCKED``, so instances share them
without working on the same ride twice, and a ride whose instance died is picked up by another
at its next round. What each event does lives in :mod:`~ridehail.matching.ride_events`,
:mod:`~ridehail.matching.assigning` and :mod:`~ridehail.matching.offering`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.batch_consumer import Decoded, Rejected
from ridehail.common.db import transaction
from ridehail.common.failures import describe, is_infrastructure_failure, is_input_failure
from ridehail.common.logging import get_logger
from ridehail.domain.events import LatLon, RideCancelled
from ridehail.domain.lifecycle import IllegalTransition
from ridehail.matching import metrics as m
from ridehail.matching import presence
from ridehail.matching.assigning import assign_batched, assign_greedy, expire_waiting
from ridehail.matching.eta import EtaModel
from ridehail.matching.locations import coalesce
from ridehail.matching.offering import withdraw_due_offers
from ridehail.matching.ride_events import apply_ride_event
from ridehail.matching.settings import MatchingSettings
from ridehail.matching.state import After, MatchingState, WaitingRide
from ridehail.matching.validation import is_replayed, unstorable
from ridehail.stores import drivers, offers, rides

log = get_logger(__name__)

PRESENCE_SWEEP_S = 1.0


class MatchingEngine(MatchingState):
    def __init__(
        self,
        settings: MatchingSettings,
        session_factory: async_sessionmaker[AsyncSession],
        eta: EtaModel,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(settings=settings, eta=eta)
        self._factory = session_factory
        self._on_outbox = on_outbox or (lambda: None)
        self._lock = asyncio.Lock()  # rides handler and rounds of this instance never interleave

    # -- presence ----------------------------------------------------------------------------------
    async def sweep_presence(self) -> None:
        """Count present and free drivers and flag rides whose driver went silent (also at start)."""
        async with transaction(self._factory) as session:
            self.presence = await presence.sweep(session, self)
        self.update_gauges()

    async def is_candidate(self, driver_id: str) -> bool:
        """Whether ``driver_id`` is free and present now (what a request would see)."""
        async with transaction(self._factory) as session:
            row = await drivers.load_driver(session, driver_id)
        return bool(
            row is not None
            and row["status"] == "available"
            and row["current_ride_id"] is None
            and row["last_seen_ms"] >= self.seen_since_ms()
        )

    # -- locations ---------------------------------------------------------------------------------
    async def handle_locations(self, batch: list[Decoded]) -> list[Rejected]:
        pings, rejected = coalesce(batch)
        async with transaction(self._factory) as session:
            changed = await drivers.upsert_locations(session, pings)
        m.STALE_PINGS.inc(len(pings) - changed)
        m.EVENTS.labels("location").inc(len(batch))
        self.meter.add(len(batch))
        return rejected

    # -- rides -------------------------------------------------------------------------------------
    async def handle_rides(self, batch: list[Decoded]) -> list[Rejected]:
        """Each event in its own transaction: one the database refuses is dead-lettered instead of
        failing the batch, and no transaction holds one driver's row while waiting for another's
        (what a batch of pings holds), so rides and pings never deadlock. A batch that fails
        midway is consumed again; the events already applied are recognised by their ids."""
        rejected: list[Rejected] = []
        async with self._lock:
            for item in batch:
                problem = unstorable(item)
                if problem:
                    rejected.append(Rejected(item.message, problem))
                    continue
                after: After = []
                try:
                    async with transaction(self._factory) as session:
                        await apply_ride_event(session, self, item.event, after, is_replayed(item))
                except IllegalTransition as exc:
                    rejected.append(Rejected(item.message, exc.reason))
                    continue
                except Exception as exc:
                    if is_infrastructure_failure(exc):
                        raise  # the database is away: the batch is retried, nothing rejected
                    # Whatever else it raised (the database refused a value, a number too large to
                    # quantise, a bug), this event cannot be applied: its transaction rolled back,
                    # it is dead-lettered and the next event goes on.
                    what = "refused by the database" if is_input_failure(exc) else "could not be applied"
                    rejected.append(Rejected(item.message, f"{what}: {describe(exc)}"))
                    continue
                for action in after:
                    action()
        m.EVENTS.labels("ride").inc(len(batch))
        self.meter.add(len(batch))
        self._on_outbox()
        return rejected

    # -- rounds ------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """One round: expire old requests, assign the waiting rides no other instance is working on
        (greedy: one transaction per ride; batched: one solve over all of them)."""
        async with self._lock:
            if self.mode == "batched":
                async with transaction(self._factory) as session:
                    after = await self._round(session, await rides.lock_waiting_rides(session))
                self._committed(after)
                return
            async with transaction(self._factory) as session:
                ride_ids = await rides.waiting_ride_ids(session)
            for ride_id in ride_ids:
                async with transaction(self._factory) as session:
                    after = await self._round(session, await rides.lock_waiting_rides(session, ride_id=ride_id))
                self._committed(after)

    async def _round(self, session: AsyncSession, rows: list[Any]) -> After:
        after: After = []
        excluded = await offers.offered_drivers(session, [r["ride_id"] for r in rows])
        waiting = [
            WaitingRide(
                r["ride_id"],
                r["rider_id"],
                LatLon(r["pickup_lat"], r["pickup_lon"]),
                LatLon(r["dropoff_lat"], r["dropoff_lon"]),
                int(r["requested_ms"]),
                excluded.get(r["ride_id"], set()),
            )
            for r in rows
        ]
        if waiting:
            waiting = await expire_waiting(session, self, waiting, after)
        if waiting and self.mode == "batched":
            await assign_batched(session, self, waiting, after)
        else:
            for ride in waiting:
                await assign_greedy(session, self, ride, after)
        return after

    def _committed(self, after: After) -> None:
        for action in after:
            action()
        if after:
            self._on_outbox()

    async def withdraw_offers(self) -> None:
        """Withdraw the offers that are due (timed out, or the driver went silent), each in its own
        transaction (a withdrawal releases one driver and may claim the next)."""
        while True:
            after: After = []
            async with transaction(self._factory) as session:
                withdrawn = await withdraw_due_offers(session, self, after, limit=1)
            self._committed(after)
            if not withdrawn:
                return

    async def cancel_stale_assignments(self) -> int:
        """Safety net: a driver that never reports arriving (its simulator restarted, it refused the
        ride...) must not stay booked forever. The ride ends ``cancelled`` by the system, the driver
        is released, and a ``RideCancelled`` event tells everyone."""
        timeout_s = self.settings.matching_pickup_timeout_s
        reason = f"driver did not reach the pickup within {timeout_s:g} s"
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
                    await self.release(session, row["driver_id"], row["ride_id"])
        if stale:
            log.warning("stale_assignments_cancelled", count=len(stale), reason=reason)
            self._on_outbox()
        return len(stale)

    async def run_ticker(self, stop: asyncio.Event) -> None:
        """Assignment rounds every batch window, the presence sweep every second, the stale
        assignment check every refresh period."""
        window_s = self.settings.matching_batch_window_ms / 1000
        step_s = min(window_s, PRESENCE_SWEEP_S)
        last_round = last_sweep = last_stale = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=step_s)
            if stop.is_set():
                return
            now = time.monotonic()
            for due, job, name in (
                (now - last_stale >= self.settings.matching_refresh_s, self.cancel_stale_assignments, "stale"),
                (now - last_sweep >= PRESENCE_SWEEP_S, self.sweep_presence, "presence"),
                (now - last_round >= window_s, self.tick, "round"),
            ):
                if not due:
                    continue
                try:
                    await job()
                except Exception as exc:
                    log.warning("matching_job_failed", job=name, error=repr(exc)[:300])
            last_stale = now if now - last_stale >= self.settings.matching_refresh_s else last_stale
            last_sweep = now if now - last_sweep >= PRESENCE_SWEEP_S else last_sweep
            last_round = now if now - last_round >= window_s else last_round

    async def run_offer_clock(self, stop: asyncio.Event) -> None:
        """Offers are withdrawn at their deadline and checked every ``matching_offer_check_ms``."""
        if not self.settings.matching_offers:
            await stop.wait()
            return
        await self.offer_clock.run(stop, self.withdraw_offers, self.settings.matching_offer_check_ms / 1000)
