"""The matching engine: applies consumed batches to Postgres (one transaction each) and keeps the
in-memory view (H3 driver index, waiting rides) in step with what was committed.

Postgres is the source of truth. The in-memory index only proposes candidates; a driver becomes
assigned through one conditional UPDATE (``claim_driver``), so a stale index or a second matching
instance can cost a retry, never a double booking. The in-memory state is rebuilt from Postgres at
start, every ``matching_refresh_s``, and after any failed batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.db import transaction
from ridehail.common.events import (
    DriverLocation,
    Event,
    LatLon,
    RideArrived,
    RideAssigned,
    RideCancelled,
    RideCompleted,
    RideExpired,
    RideOfferAnswered,
    RideOffered,
    RideOfferTimedOut,
    RidePickedUp,
    RideRequested,
    event_type,
    now_ms,
)
from ridehail.common.geo import SERVICE_AREA, haversine_m
from ridehail.common.kafka import Decoded, Rejected
from ridehail.common.logging import get_logger
from ridehail.common.outbox import add_outbox
from ridehail.common.topics import REPLAY_HEADER, RIDE_EVENT
from ridehail.matching import metrics as m
from ridehail.matching import offer_store, store
from ridehail.matching.assignment import DriverCandidate, RiderRequest, batched_assign
from ridehail.matching.eta import EtaModel
from ridehail.matching.index import DriverIndex
from ridehail.matching.lifecycle import DRIVER_STATUS_FOR, TRANSITIONS, IllegalTransition, next_status
from ridehail.matching.offers import OfferStats
from ridehail.matching.replayed import apply_recorded_decision
from ridehail.matching.settings import MatchingSettings

log = get_logger(__name__)

GREEDY_TRIES = 8  # candidates tried per request before waiting for the next round
MIN_TRIP_M = 1.0


BIGINT_MAX = 2**63 - 1


def unstorable(item: Decoded) -> str | None:
    """Why Postgres could not store this (valid-looking) event, or None: NUL characters (text and
    jsonb refuse them) and integers beyond bigint would otherwise fail the whole batch."""
    raw = item.message.value() or b""
    if b"\\u0000" in raw:
        return "NUL character (\\u0000) in a string field"
    event = item.event
    for name in ("ts", "seq"):
        value = getattr(event, name, 0)
        if isinstance(value, int) and value > BIGINT_MAX:
            return f"{name}={value} is beyond the 64-bit range"
    return None


@dataclass(slots=True)
class WaitingRide:
    ride_id: str
    rider_id: str
    pickup: LatLon
    dropoff: LatLon
    requested_ms: int
    excluded: set[str] = field(default_factory=set)  # drivers already offered this ride


def is_replayed(item: Decoded) -> bool:
    headers = item.message.headers()
    return bool(headers) and any(k == REPLAY_HEADER for k, _ in headers)


class MatchingEngine:
    def __init__(
        self,
        settings: MatchingSettings,
        session_factory: async_sessionmaker[AsyncSession],
        eta: EtaModel,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.mode = settings.matching_mode
        self.radius_m = settings.matching_radius_m
        self._factory = session_factory
        self.eta = eta
        self._on_outbox = on_outbox or (lambda: None)
        self.index = DriverIndex(settings.matching_h3_resolution)
        self.waiting: dict[str, WaitingRide] = {}
        self._lock = asyncio.Lock()  # rides handler and ticker never interleave their assignments
        self._dirty = True
        self._loaded_once = False
        self.meter = m.RateMeter()
        self.assigned = 0
        self.expired = 0
        self.claim_conflicts = 0
        self.offer_drivers: set[str] = set()  # drivers whose pings say they answer offers
        self.offer_stats = OfferStats()

    # -- state from Postgres -----------------------------------------------------------------------
    async def rebuild(self) -> None:
        """Re-read available drivers and waiting rides (start, periodic refresh, after a failure)."""
        # Read outside the lock (ride handling goes on meanwhile); swap under it. Anything that
        # changed in between is at worst a claim that fails or a ride that is no longer waiting.
        async with transaction(self._factory) as session:
            drivers = await store.load_drivers(session)
            rides = await store.load_waiting_rides(session)
            excluded = await offer_store.offered_drivers(session, [r["ride_id"] for r in rides])
        async with self._lock:
            self.index.clear()
            self.offer_drivers = {d.driver_id for d in drivers if d.accepts_offers}
            for d in drivers:
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
                for r in rides
            }
            self._dirty = False
            self._update_gauges()
        report = log.debug if self._loaded_once else log.info  # the periodic refresh stays quiet
        report("matching_state_loaded", drivers_available=len(self.index), rides_waiting=len(self.waiting))
        self._loaded_once = True

    def _update_gauges(self) -> None:
        m.DRIVERS_AVAILABLE.set(len(self.index))
        m.RIDES_WAITING.set(len(self.waiting))
        m.EVENTS_PER_S.set(self.meter.rate())

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
                changed = await store.upsert_locations(session, pings)
        except Exception:
            self._dirty = True
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
        n = len(batch)
        m.EVENTS.labels("location").inc(n)
        self.meter.add(n)
        return rejected

    # -- rides -------------------------------------------------------------------------------------
    async def handle_rides(self, batch: list[Decoded]) -> list[Rejected]:
        rejected: list[Rejected] = []
        after_commit: list[Callable[[], None]] = []
        async with self._lock:
            try:
                async with transaction(self._factory) as session:
                    for item in batch:
                        problem = unstorable(item)
                        if problem:
                            rejected.append(Rejected(item.message, problem))
                            continue
                        mark = len(after_commit)
                        try:
                            # A savepoint per event: one event the database refuses is dead-lettered
                            # instead of failing (and endlessly retrying) the whole batch.
                            async with session.begin_nested():
                                await self._apply_ride_event(session, item.event, after_commit, is_replayed(item))
                        except IllegalTransition as exc:
                            del after_commit[mark:]
                            rejected.append(Rejected(item.message, exc.reason))
                        except (DataError, IntegrityError) as exc:
                            del after_commit[mark:]
                            self._dirty = True  # in-memory moves of this event are re-read from Postgres
                            reason = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
                            rejected.append(Rejected(item.message, f"refused by the database: {reason}"))
            except Exception:
                self._dirty = True
                raise
            for action in after_commit:
                action()
            self._update_gauges()
        m.EVENTS.labels("ride").inc(len(batch))
        self.meter.add(len(batch))
        self._on_outbox()
        return rejected

    async def _apply_ride_event(
        self, session: AsyncSession, event: Event, after: list[Callable[[], None]], replayed: bool = False
    ) -> None:
        if isinstance(event, RideRequested):
            await self._on_requested(session, event, after, replayed)
        elif isinstance(event, RideOfferAnswered):
            await self._on_offer_answer(session, event, after, replayed)
        elif isinstance(event, RideOffered | RideAssigned | RideExpired | RideOfferTimedOut):
            # Matching's own output: its effect was committed with the event (same event id). A
            # replayed recording's decisions are not ours: they are applied as recorded.
            if replayed and not await store.event_seen(session, event.event_id):
                await apply_recorded_decision(session, event)
                self.waiting.pop(event.ride_id, None)
                self._dirty = True  # driver holds and releases are re-read into the index
        elif isinstance(event, RideArrived | RidePickedUp | RideCompleted | RideCancelled):
            await self._on_lifecycle(session, event, after)
        else:
            raise IllegalTransition(f"unexpected event {event_type(type(event))} on ride topics")

    async def _on_requested(
        self, session: AsyncSession, event: RideRequested, after: list[Callable[[], None]], replayed: bool = False
    ) -> None:
        for name, point in (("pickup", event.pickup), ("dropoff", event.dropoff)):
            if not SERVICE_AREA.contains(point.lat, point.lon):
                raise IllegalTransition(f"{name} outside the service area: {point.lat},{point.lon}")
        if haversine_m(event.pickup.lat, event.pickup.lon, event.dropoff.lat, event.dropoff.lon) < MIN_TRIP_M:
            raise IllegalTransition("pickup and dropoff are the same place")
        await store.ensure_ride(session, event, replayed=replayed)
        await store.insert_ride_event(session, event)
        ride = await store.lock_ride(session, event.ride_id)
        if ride is None or ride["status"] != "requested" or ride["replayed"]:
            return  # replayed request of a ride that has moved on, or one the recording decides
        waiting = WaitingRide(event.ride_id, event.rider_id, event.pickup, event.dropoff, event.ts)
        self.waiting[event.ride_id] = waiting
        if self.mode == "greedy":
            await self._assign_greedy(session, waiting, after)

    async def _on_lifecycle(
        self,
        session: AsyncSession,
        event: RideArrived | RidePickedUp | RideCompleted | RideCancelled,
        after: list[Callable[[], None]],
    ) -> None:
        kind = event_type(type(event))
        if await store.event_seen(session, event.event_id):
            # Already applied (replay, or a cancel the gateway committed): only refresh our view.
            if isinstance(event, RideCancelled):
                self.waiting.pop(event.ride_id, None)
                if event.driver_id:
                    await self._refresh_driver(session, event.driver_id, after)
            return
        ride = await store.lock_ride(session, event.ride_id)
        if ride is None:
            raise IllegalTransition(f"{kind} for unknown ride {event.ride_id}")
        target = next_status(ride["status"], kind)
        driver_id = event.driver_id
        if ride["driver_id"] is not None and driver_id is not None and driver_id != ride["driver_id"]:
            raise IllegalTransition(f"driver {driver_id} is not assigned to ride {event.ride_id}")
        driver_id = driver_id or ride["driver_id"]
        transition = TRANSITIONS[kind]
        reason = (event.reason or f"cancelled by {event.by}") if isinstance(event, RideCancelled) else None
        await store.set_ride_status(
            session, event.ride_id, sorted(transition.sources), target, transition.timestamp_column, reason=reason
        )
        await store.insert_ride_event(session, event)
        if isinstance(event, RideCompleted):
            await store.store_fare(session, event, ride["surge_multiplier"])
        if isinstance(event, RideCancelled):
            await session.execute(
                text("UPDATE rides SET cancelled_by = :by WHERE ride_id = :r"), {"by": event.by, "r": event.ride_id}
            )
        if driver_id is not None:
            driver_status = DRIVER_STATUS_FOR[target]
            if driver_status is None:
                released = await store.release_driver(session, driver_id, event.ride_id)
                if released is not None:
                    lat, lon = released["lat"], released["lon"]
                    after.append(lambda d=driver_id, a=lat, b=lon: self.index.upsert(d, a, b))
            else:
                await store.set_driver_ride_status(session, driver_id, event.ride_id, driver_status)
        if target in ("cancelled",):
            self.waiting.pop(event.ride_id, None)

    async def _refresh_driver(self, session: AsyncSession, driver_id: str, after: list[Callable[[], None]]) -> None:
        row = (
            await session.execute(
                text("SELECT lat, lon, status, current_ride_id FROM drivers WHERE driver_id = :d"), {"d": driver_id}
            )
        ).first()
        if row is not None and row.status == "available" and row.current_ride_id is None:
            after.append(lambda: self.index.upsert(driver_id, row.lat, row.lon))

    # -- assignment --------------------------------------------------------------------------------
    async def _assign_greedy(self, session: AsyncSession, ride: WaitingRide, after: list[Callable[[], None]]) -> bool:
        started = time.perf_counter()
        nearby = self.index.candidates(
            ride.pickup.lat, ride.pickup.lon, self.radius_m, limit=4 * GREEDY_TRIES + len(ride.excluded)
        )
        nearby = [d for d in nearby if d.driver_id not in ride.excluded]
        if not nearby:
            return False
        etas = self.eta.matrix(
            np.array([[ride.pickup.lat, ride.pickup.lon]]), np.array([[d.lat, d.lon] for d in nearby])
        )[0]
        order = np.argsort(etas)[:GREEDY_TRIES]
        m.SOLVE_SECONDS.observe(time.perf_counter() - started)
        for j in order:
            outcome = await self._try_assign(session, ride, nearby[int(j)].driver_id, float(etas[int(j)]), after)
            if outcome != "driver_taken":
                return outcome in ("assigned", "offered")
        return False

    async def _try_assign(
        self, session: AsyncSession, ride: WaitingRide, driver_id: str, eta_s: float, after: list[Callable[[], None]]
    ) -> str:
        """Claim ``driver_id`` for ``ride`` atomically. Returns assigned, offered, driver_taken or ride_gone.
        A driver that answers offers is held (``offered``) and asked; others are assigned at once."""
        self.index.remove(driver_id)
        if self.settings.matching_offers and driver_id in self.offer_drivers:
            return await self._try_offer(session, ride, driver_id, eta_s, after)
        position = await store.claim_driver(session, driver_id, ride.ride_id)
        if position is None:
            m.CLAIM_CONFLICTS.inc()
            self.claim_conflicts += 1
            return "driver_taken"
        moved = await store.set_ride_status(
            session, ride.ride_id, ["requested"], "assigned", "assigned_at", driver_id=driver_id
        )
        if not moved:  # cancelled or assigned elsewhere meanwhile: give the driver back
            released = await store.release_driver(session, driver_id, ride.ride_id)
            if released is not None:
                after.append(lambda: self.index.upsert(driver_id, released["lat"], released["lon"]))
            self.waiting.pop(ride.ride_id, None)
            return "ride_gone"
        event = RideAssigned(
            ride_id=ride.ride_id,
            rider_id=ride.rider_id,
            driver_id=driver_id,
            pickup=ride.pickup,
            dropoff=ride.dropoff,
            eta_s=round(max(eta_s, 0.0), 1),
            surge_multiplier=await store.ride_surge_multiplier(session, ride.ride_id),
        )
        await store.insert_ride_event(session, event)
        await add_outbox(session, RIDE_EVENT.name, ride.ride_id, event)
        self.waiting.pop(ride.ride_id, None)
        requested_ms = ride.requested_ms
        mode = self.mode

        def committed() -> None:
            self.assigned += 1
            m.ASSIGNMENTS.labels(mode).inc()
            m.ASSIGN_LATENCY.observe(max(now_ms() - requested_ms, 0) / 1000)
            m.PICKUP_ETA.observe(eta_s)

        after.append(committed)
        return "assigned"

    async def _try_offer(
        self, session: AsyncSession, ride: WaitingRide, driver_id: str, eta_s: float, after: list[Callable[[], None]]
    ) -> str:
        if await store.claim_driver(session, driver_id, ride.ride_id, status="offered") is None:
            m.CLAIM_CONFLICTS.inc()
            self.claim_conflicts += 1
            return "driver_taken"
        timeout_ms = int(self.settings.matching_offer_timeout_s * 1000)
        offered_ms = now_ms()
        event = RideOffered(
            ride_id=ride.ride_id,
            rider_id=ride.rider_id,
            driver_id=driver_id,
            pickup=ride.pickup,
            dropoff=ride.dropoff,
            eta_s=round(max(eta_s, 0.0), 1),
            expires_ts=offered_ms + timeout_ms,
            ts=offered_ms,
        )
        attempt = await offer_store.offer_ride(session, ride.ride_id, driver_id, event.event_id)
        if attempt is None:  # cancelled meanwhile: give the driver back
            released = await store.release_driver(session, driver_id, ride.ride_id)
            if released is not None:
                after.append(lambda: self.index.upsert(driver_id, released["lat"], released["lon"]))
            self.waiting.pop(ride.ride_id, None)
            return "ride_gone"
        if attempt != 1:
            event = msgspec.structs.replace(event, attempt=attempt)
        await store.insert_ride_event(session, event)
        await add_outbox(session, RIDE_EVENT.name, ride.ride_id, event)
        self.waiting.pop(ride.ride_id, None)
        after.append(self.offer_stats.sent)
        return "offered"

    async def _on_offer_answer(
        self, session: AsyncSession, answer: RideOfferAnswered, after: list[Callable[[], None]], replayed: bool
    ) -> None:
        """A driver's answer. Only the ride's open offer to that driver moves anything; a late or
        duplicate answer (the offer timed out, the rider cancelled, a redelivery) is kept in the
        history, logged and counted, and changes nothing."""
        ride = await store.lock_ride(session, answer.ride_id)
        if ride is None:
            raise IllegalTransition(f"offer answer for unknown ride {answer.ride_id}")
        fresh = await store.insert_ride_event(session, answer)
        if replayed and ride["replayed"]:
            return  # the recording carries what followed (assigned, or the next offer)
        current = (ride["status"], ride["offer_id"], ride["driver_id"])
        if not fresh or current != ("offered", answer.offer_id, answer.driver_id):
            log.info(
                "offer_answer_ignored",
                ride_id=answer.ride_id,
                driver_id=answer.driver_id,
                offer_id=answer.offer_id,
                accepted=answer.accepted,
                ride_status=ride["status"],
                why="duplicate" if not fresh else "offer no longer open",
            )
            after.append(self.offer_stats.ignored)
            return
        if answer.accepted:
            row = await offer_store.accept_offer(session, answer.ride_id, answer.driver_id, answer.offer_id)
            await store.set_driver_ride_status(session, answer.driver_id, answer.ride_id, "to_pickup")
            event = RideAssigned(
                ride_id=answer.ride_id,
                rider_id=row["rider_id"],
                driver_id=answer.driver_id,
                pickup=LatLon(row["pickup_lat"], row["pickup_lon"]),
                dropoff=LatLon(row["dropoff_lat"], row["dropoff_lon"]),
                surge_multiplier=await store.ride_surge_multiplier(session, answer.ride_id),
            )
            await store.insert_ride_event(session, event)
            await add_outbox(session, RIDE_EVENT.name, answer.ride_id, event)
            offered_ms = int(row["offered_ms"])
            mode = self.mode

            def committed() -> None:
                self.assigned += 1
                m.ASSIGNMENTS.labels(mode).inc()
                self.offer_stats.answered(True, now_ms() - offered_ms)

            after.append(committed)
            return
        row = await offer_store.withdraw_offer(session, answer.ride_id, answer.offer_id)
        after.append(lambda ms=now_ms() - int(row["offered_ms"]): self.offer_stats.answered(False, ms))
        await self._offer_withdrawn(session, row, answer.driver_id, after)

    async def _offer_withdrawn(
        self, session: AsyncSession, row: Any, driver_id: str, after: list[Callable[[], None]]
    ) -> None:
        """Declined or timed out: free the driver, then offer the next candidate or expire the ride."""
        ride_id = row["ride_id"]
        released = await store.release_driver(session, driver_id, ride_id)
        if released is not None:
            after.append(lambda: self.index.upsert(driver_id, released["lat"], released["lon"]))
        tries = int(row["offer_attempts"])
        if tries >= self.settings.matching_offer_max_tries:
            reason = f"no driver accepted the ride after {tries} offers"
            await store.set_ride_status(session, ride_id, ["requested"], "expired", "expired_at", reason=reason)
            event = RideExpired(ride_id=ride_id, rider_id=row["rider_id"], reason=reason)
            await store.insert_ride_event(session, event)
            await add_outbox(session, RIDE_EVENT.name, ride_id, event)
            self.waiting.pop(ride_id, None)
            after.append(m.EXPIRED.inc)
            return
        excluded = (await offer_store.offered_drivers(session, [ride_id])).get(ride_id, set()) | {driver_id}
        waiting = WaitingRide(
            ride_id,
            row["rider_id"],
            LatLon(row["pickup_lat"], row["pickup_lon"]),
            LatLon(row["dropoff_lat"], row["dropoff_lon"]),
            int(row["requested_ms"]),
            excluded,
        )
        self.waiting[ride_id] = waiting
        if self.mode == "greedy":
            self.index.remove(driver_id)  # not back in the index before this transaction commits
            await self._assign_greedy(session, waiting, after)

    async def _time_out_offers(self, session: AsyncSession, after: list[Callable[[], None]]) -> None:
        timeout_s = self.settings.matching_offer_timeout_s
        for stale in await offer_store.expired_offers(session, timeout_s):
            row = await offer_store.withdraw_offer(session, stale["ride_id"], stale["offer_id"])
            if row is None:
                continue
            event = RideOfferTimedOut(
                ride_id=stale["ride_id"],
                driver_id=stale["driver_id"],
                offer_id=stale["offer_id"],
                attempt=max(int(stale["offer_attempts"]), 1),
            )
            await store.insert_ride_event(session, event)
            await add_outbox(session, RIDE_EVENT.name, event.ride_id, event)
            log.info("offer_timed_out", ride_id=event.ride_id, driver_id=event.driver_id, attempt=event.attempt)
            after.append(self.offer_stats.timed_out)
            await self._offer_withdrawn(session, row, stale["driver_id"], after)

    async def tick(self) -> None:
        """One round: assign waiting rides (batched solve, or greedy retry) and expire old ones."""
        if self._dirty:
            await self.rebuild()
        after: list[Callable[[], None]] = []
        async with self._lock:
            try:
                async with transaction(self._factory) as session:
                    if self.settings.matching_offers:
                        await self._time_out_offers(session, after)
                    if self.waiting:
                        await self._expire(session, after)
                    if self.waiting and self.mode == "batched":
                        await self._assign_batched(session, after)
                    elif self.waiting:
                        for ride in list(self.waiting.values()):
                            await self._assign_greedy(session, ride, after)
            except Exception:
                self._dirty = True
                raise
            for action in after:
                action()
            self._update_gauges()
        if after:
            self._on_outbox()

    async def _assign_batched(self, session: AsyncSession, after: list[Callable[[], None]]) -> None:
        started = time.perf_counter()
        rides = list(self.waiting.values())
        seen: dict[str, DriverCandidate] = {}
        for ride in rides:
            for d in self.index.candidates(ride.pickup.lat, ride.pickup.lon, self.radius_m):
                seen.setdefault(d.driver_id, DriverCandidate(d.driver_id, d.lat, d.lon))
        if not seen:
            return
        riders = [RiderRequest(r.ride_id, r.pickup.lat, r.pickup.lon) for r in rides]
        plan = batched_assign(riders, list(seen.values()), self.eta, self.radius_m)
        m.SOLVE_SECONDS.observe(time.perf_counter() - started)
        by_id = {r.ride_id: r for r in rides}
        for a in sorted(plan, key=lambda a: a.eta_s):
            if a.driver_id in by_id[a.ride_id].excluded:
                continue  # already offered this ride (declined or timed out): the ride waits a window
            await self._try_assign(session, by_id[a.ride_id], a.driver_id, a.eta_s, after)

    async def _expire(self, session: AsyncSession, after: list[Callable[[], None]]) -> None:
        timeout_ms = self.settings.matching_request_timeout_s * 1000
        now = now_ms()
        for ride in [r for r in self.waiting.values() if now - r.requested_ms > timeout_ms]:
            reason = (
                f"no available driver within {self.radius_m:.0f} m after {self.settings.matching_request_timeout_s:g} s"
            )
            moved = await store.set_ride_status(
                session, ride.ride_id, ["requested"], "expired", "expired_at", reason=reason
            )
            self.waiting.pop(ride.ride_id, None)
            if not moved:
                continue
            event = RideExpired(ride_id=ride.ride_id, rider_id=ride.rider_id, reason=reason)
            await store.insert_ride_event(session, event)
            await add_outbox(session, RIDE_EVENT.name, ride.ride_id, event)

            def committed() -> None:
                self.expired += 1
                m.EXPIRED.inc()

            after.append(committed)

    async def cancel_stale_assignments(self) -> int:
        """Safety net: a driver that never reports arriving (its simulator restarted, it refused the
        ride...) must not stay booked forever. The ride ends ``cancelled`` by the system, the driver
        is released, and a ``RideCancelled`` event tells everyone."""
        timeout_s = self.settings.matching_pickup_timeout_s
        reason = f"driver did not reach the pickup within {timeout_s:g} s"
        after: list[Callable[[], None]] = []
        async with self._lock, transaction(self._factory) as session:
            stale = await store.cancel_stale_assignments(session, timeout_s, reason)
            for row in stale:
                event = RideCancelled(
                    ride_id=row["ride_id"],
                    rider_id=row["rider_id"],
                    by="system",
                    reason=reason,
                    driver_id=row["driver_id"],
                )
                await store.insert_ride_event(session, event)
                await add_outbox(session, RIDE_EVENT.name, event.ride_id, event)
                if row["driver_id"]:
                    released = await store.release_driver(session, row["driver_id"], row["ride_id"])
                    if released is not None:
                        d, lat, lon = row["driver_id"], released["lat"], released["lon"]
                        after.append(lambda d=d, lat=lat, lon=lon: self.index.upsert(d, lat, lon))
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
                    self._dirty = True
                    last_refresh = time.monotonic()
                    await self.cancel_stale_assignments()
                await self.tick()
            except Exception as exc:
                log.warning("matching_tick_failed", error=repr(exc)[:300])
