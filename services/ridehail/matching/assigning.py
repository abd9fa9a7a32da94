"""Assignment: find the nearest free, present drivers by road ETA and claim one for a waiting ride,
greedily per request or as one batched solve per window; expire rides nobody took.

Postgres decides: candidates come from the drivers table (:mod:`~ridehail.matching.candidates`,
the same for every instance), and a driver becomes the ride's only through one conditional
UPDATE (:func:`ridehail.stores.drivers.claim_driver`), so a second matching instance costs a
retry, never a double booking. A driver that answers offers is held and asked instead.
"""

from __future__ import annotations

import time

import msgspec
import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.domain.events import RideAssigned, RideExpired, RideOffered, now_ms
from ridehail.matching import candidates
from ridehail.matching import metrics as m
from ridehail.matching.assignment import DriverCandidate, RiderRequest, batched_assign
from ridehail.matching.state import After, MatchingState, WaitingRide
from ridehail.stores import drivers, offers, rides

GREEDY_TRIES = 8  # candidates tried per request before waiting for the next round


async def assign_greedy(session: AsyncSession, state: MatchingState, ride: WaitingRide, after: After) -> bool:
    started = time.perf_counter()
    seen_since = state.seen_since_ms()
    nearby = await candidates.nearest(
        session, ride.pickup.lat, ride.pickup.lon, state.radius_m, 4 * GREEDY_TRIES, seen_since, ride.excluded
    )
    if not nearby:
        return False
    etas = state.eta.matrix(np.array([[ride.pickup.lat, ride.pickup.lon]]), np.array([[d.lat, d.lon] for d in nearby]))[
        0
    ]
    order = np.argsort(etas, kind="stable")[:GREEDY_TRIES]
    m.SOLVE_SECONDS.observe(time.perf_counter() - started)
    for j in order:
        d = nearby[int(j)]
        outcome = await try_assign(session, state, ride, d.driver_id, d.accepts_offers, float(etas[int(j)]), after)
        if outcome != "driver_taken":
            return outcome in ("assigned", "offered")
    return False


async def assign_batched(session: AsyncSession, state: MatchingState, waiting: list[WaitingRide], after: After) -> None:
    started = time.perf_counter()
    pool = await candidates.around(
        session, [(r.pickup.lat, r.pickup.lon) for r in waiting], state.radius_m, state.seen_since_ms()
    )
    if not pool:
        return
    answers_offers = {d.driver_id: d.accepts_offers for d in pool}
    riders = [RiderRequest(r.ride_id, r.pickup.lat, r.pickup.lon) for r in waiting]
    plan = batched_assign(riders, [DriverCandidate(d.driver_id, d.lat, d.lon) for d in pool], state.eta, state.radius_m)
    m.SOLVE_SECONDS.observe(time.perf_counter() - started)
    by_id = {r.ride_id: r for r in waiting}
    for a in sorted(plan, key=lambda a: a.eta_s):
        if a.driver_id in by_id[a.ride_id].excluded:
            continue  # already offered this ride (declined or timed out): the ride waits a window
        await try_assign(session, state, by_id[a.ride_id], a.driver_id, answers_offers[a.driver_id], a.eta_s, after)


def _claim_conflict(state: MatchingState) -> str:
    m.CLAIM_CONFLICTS.inc()
    state.claim_conflicts += 1
    return "driver_taken"


async def try_assign(
    session: AsyncSession,
    state: MatchingState,
    ride: WaitingRide,
    driver_id: str,
    answers_offers: bool,
    eta_s: float,
    after: After,
) -> str:
    """Claim ``driver_id`` for ``ride`` atomically. Returns assigned, offered, driver_taken or ride_gone.
    A driver that answers offers is held (``offered``) and asked; others are assigned at once.
    Only a driver still present at the claim can be claimed."""
    if state.settings.matching_offers and answers_offers:
        return await try_offer(session, state, ride, driver_id, eta_s, after)
    if await drivers.claim_driver(session, driver_id, ride.ride_id, seen_since_ms=state.seen_since_ms()) is None:
        return _claim_conflict(state)
    moved = await rides.set_ride_status(
        session, ride.ride_id, ["requested"], "assigned", "assigned_at", driver_id=driver_id
    )
    if not moved:  # cancelled or assigned elsewhere meanwhile: give the driver back
        await state.release(session, driver_id, ride.ride_id)
        return "ride_gone"
    event = RideAssigned(
        ride_id=ride.ride_id,
        rider_id=ride.rider_id,
        driver_id=driver_id,
        pickup=ride.pickup,
        dropoff=ride.dropoff,
        eta_s=round(max(eta_s, 0.0), 1),
        surge_multiplier=await rides.ride_surge_multiplier(session, ride.ride_id),
    )
    await rides.publish(session, event)
    requested_ms = ride.requested_ms
    mode = state.mode

    def committed() -> None:
        state.assigned += 1
        m.ASSIGNMENTS.labels(mode).inc()
        m.ASSIGN_LATENCY.observe(max(now_ms() - requested_ms, 0) / 1000)
        m.PICKUP_ETA.observe(eta_s)

    after.append(committed)
    return "assigned"


async def try_offer(
    session: AsyncSession, state: MatchingState, ride: WaitingRide, driver_id: str, eta_s: float, after: After
) -> str:
    seen_since = state.seen_since_ms()
    if await drivers.claim_driver(session, driver_id, ride.ride_id, status="offered", seen_since_ms=seen_since) is None:
        return _claim_conflict(state)
    timeout_ms = int(state.settings.matching_offer_timeout_s * 1000)
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
    offered = await offers.offer_ride(session, ride.ride_id, driver_id, event.event_id)
    if offered is None:  # cancelled meanwhile: give the driver back
        await state.release(session, driver_id, ride.ride_id)
        return "ride_gone"
    attempt, stored_ms = offered
    if attempt != 1:
        event = msgspec.structs.replace(event, attempt=attempt)
    await rides.publish(session, event)

    def committed() -> None:
        state.offer_stats.sent()
        state.offer_clock.add(stored_ms + timeout_ms)  # the time-out is due then (Postgres' offered_at)

    after.append(committed)
    return "offered"


async def expire_waiting(
    session: AsyncSession, state: MatchingState, waiting: list[WaitingRide], after: After
) -> list[WaitingRide]:
    """Rides that found no driver within the request time-out end ``expired`` with the reason;
    returns the rides still waiting."""
    timeout_s = state.settings.matching_request_timeout_s
    now = now_ms()
    still = [r for r in waiting if now - r.requested_ms <= timeout_s * 1000]
    for ride in [r for r in waiting if now - r.requested_ms > timeout_s * 1000]:
        reason = f"no available driver within {state.radius_m:.0f} m after {timeout_s:g} s"
        moved = await rides.set_ride_status(
            session, ride.ride_id, ["requested"], "expired", "expired_at", reason=reason
        )
        if not moved:
            continue
        await rides.publish(session, RideExpired(ride_id=ride.ride_id, rider_id=ride.rider_id, reason=reason))

        def committed() -> None:
            state.expired += 1
            m.EXPIRED.inc()

        after.append(committed)
    return still
