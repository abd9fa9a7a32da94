"""Driver offers: a driver's answer, an offer withdrawn (no answer in time, or the driver went
silent), and what follows (the next candidate, or the ride expires after
``RIDEHAIL_MATCHING_OFFER_MAX_TRIES`` offers).

Only the ride's open offer to that driver moves anything (:mod:`ridehail.stores.offers` makes
every move conditional on it), so a late or duplicate answer, a rider's cancel racing it or a
second matching instance change nothing twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.common.logging import get_logger
from ridehail.domain.events import LatLon, RideAssigned, RideExpired, RideOfferAnswered, RideOfferTimedOut, now_ms
from ridehail.domain.lifecycle import IllegalTransition
from ridehail.matching import metrics as m
from ridehail.matching.assigning import assign_greedy
from ridehail.matching.state import After, MatchingState, WaitingRide
from ridehail.stores import drivers, offers, rides

log = get_logger(__name__)


async def on_offer_answer(
    session: AsyncSession, state: MatchingState, answer: RideOfferAnswered, after: After, replayed: bool
) -> None:
    """A driver's answer. A late or duplicate answer (the offer timed out, the rider cancelled, a
    redelivery) is kept in the history, logged and counted, and changes nothing."""
    ride = await rides.lock_ride(session, answer.ride_id)
    if ride is None:
        raise IllegalTransition(f"offer answer for unknown ride {answer.ride_id}")
    fresh = await rides.insert_ride_event(session, answer)
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
        after.append(state.offer_stats.ignored)
        return
    if answer.accepted:
        await _accepted(session, state, answer, after)
        return
    row = await offers.withdraw_offer(session, answer.ride_id, answer.offer_id)
    waited_ms = now_ms() - int(row["offered_ms"])
    after.append(lambda: state.offer_stats.answered(False, waited_ms))
    await offer_withdrawn(session, state, row, answer.driver_id, after)


async def _accepted(session: AsyncSession, state: MatchingState, answer: RideOfferAnswered, after: After) -> None:
    row = await offers.accept_offer(session, answer.ride_id, answer.driver_id, answer.offer_id)
    await drivers.set_driver_ride_status(session, answer.driver_id, answer.ride_id, "to_pickup")
    event = RideAssigned(
        ride_id=answer.ride_id,
        rider_id=row["rider_id"],
        driver_id=answer.driver_id,
        pickup=LatLon(row["pickup_lat"], row["pickup_lon"]),
        dropoff=LatLon(row["dropoff_lat"], row["dropoff_lon"]),
        surge_multiplier=await rides.ride_surge_multiplier(session, answer.ride_id),
    )
    await rides.publish(session, event)
    offered_ms = int(row["offered_ms"])
    mode = state.mode

    def committed() -> None:
        state.assigned += 1
        m.ASSIGNMENTS.labels(mode).inc()
        state.offer_stats.answered(True, now_ms() - offered_ms)

    after.append(committed)


async def offer_withdrawn(session: AsyncSession, state: MatchingState, row: Any, driver_id: str, after: After) -> None:
    """Declined or timed out: free the driver, then offer the next candidate or expire the ride."""
    ride_id = row["ride_id"]
    await state.release(session, driver_id, ride_id)
    tries = int(row["offer_attempts"])
    if tries >= state.settings.matching_offer_max_tries:
        reason = f"no driver accepted the ride after {tries} offers"
        await rides.set_ride_status(session, ride_id, ["requested"], "expired", "expired_at", reason=reason)
        await rides.publish(session, RideExpired(ride_id=ride_id, rider_id=row["rider_id"], reason=reason))
        after.append(m.EXPIRED.inc)
        return
    excluded = (await offers.offered_drivers(session, [ride_id])).get(ride_id, set()) | {driver_id}
    waiting = WaitingRide(
        ride_id,
        row["rider_id"],
        LatLon(row["pickup_lat"], row["pickup_lon"]),
        LatLon(row["dropoff_lat"], row["dropoff_lon"]),
        int(row["requested_ms"]),
        excluded,
    )
    if state.mode == "greedy":  # batched: the ride is solved with the others in the next window
        await assign_greedy(session, state, waiting, after)


async def withdraw_due_offers(session: AsyncSession, state: MatchingState, after: After, limit: int = 500) -> int:
    """Withdraw up to ``limit`` open offers that timed out or whose driver went silent; returns how many."""
    timeout_s = state.settings.matching_offer_timeout_s
    now = now_ms()
    due = await offers.offers_to_withdraw(session, timeout_s, now, state.seen_since_ms(now), limit)
    for stale in due:
        row = await offers.withdraw_offer(session, stale["ride_id"], stale["offer_id"])
        if row is None:
            continue
        if stale["timed_out"]:
            reason = f"no answer within {timeout_s:g} s"
            after.append(state.offer_stats.timed_out)
        else:
            reason = f"driver went silent (no ping for {state.settings.driver_presence_ttl_s:g} s)"
            after.append(state.offer_stats.silent)
        event = RideOfferTimedOut(
            ride_id=stale["ride_id"],
            driver_id=stale["driver_id"],
            offer_id=stale["offer_id"],
            attempt=max(int(stale["offer_attempts"]), 1),
            reason=reason,
        )
        await rides.publish(session, event)
        log.info("offer_withdrawn", ride_id=event.ride_id, driver_id=event.driver_id, attempt=event.attempt, why=reason)
        await offer_withdrawn(session, state, row, stale["driver_id"], after)
    return len(due)
