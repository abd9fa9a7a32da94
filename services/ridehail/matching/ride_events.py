"""What each ride event does to Postgres: a request is stored as a waiting ride (and, greedy, is
assigned at once); arrived, picked up, completed and cancelled move the ride through the state
machine and free or re-status its driver; matching's own decisions are applied only when they
come from a replayed recording."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.domain.events import (
    Event,
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
)
from ridehail.domain.geo import SERVICE_AREA, haversine_m
from ridehail.domain.lifecycle import DRIVER_STATUS_FOR, TRANSITIONS, IllegalTransition, next_status
from ridehail.matching.assigning import assign_greedy
from ridehail.matching.offering import on_offer_answer
from ridehail.matching.replayed import apply_recorded_decision
from ridehail.matching.state import After, MatchingState, WaitingRide
from ridehail.stores import drivers, rides

MIN_TRIP_M = 1.0
Lifecycle = RideArrived | RidePickedUp | RideCompleted | RideCancelled


async def apply_ride_event(
    session: AsyncSession, state: MatchingState, event: Event, after: After, replayed: bool = False
) -> None:
    if isinstance(event, RideRequested):
        await on_requested(session, state, event, after, replayed)
    elif isinstance(event, RideOfferAnswered):
        await on_offer_answer(session, state, event, after, replayed)
    elif isinstance(event, RideOffered | RideAssigned | RideExpired | RideOfferTimedOut):
        # Matching's own output: its effect was committed with the event (same event id). A
        # replayed recording's decisions are not ours: they are applied as recorded.
        if replayed and not await rides.event_seen(session, event.event_id):
            await apply_recorded_decision(session, event)
    elif isinstance(event, Lifecycle):
        await on_lifecycle(session, state, event)
    else:
        raise IllegalTransition(f"unexpected event {event_type(type(event))} on ride topics")


async def on_requested(
    session: AsyncSession, state: MatchingState, event: RideRequested, after: After, replayed: bool = False
) -> None:
    for name, point in (("pickup", event.pickup), ("dropoff", event.dropoff)):
        if not SERVICE_AREA.contains(point.lat, point.lon):
            raise IllegalTransition(f"{name} outside the service area: {point.lat},{point.lon}")
    if haversine_m(event.pickup.lat, event.pickup.lon, event.dropoff.lat, event.dropoff.lon) < MIN_TRIP_M:
        raise IllegalTransition("pickup and dropoff are the same place")
    await rides.ensure_ride(session, event, replayed=replayed)
    await rides.insert_ride_event(session, event)
    ride = await rides.lock_ride(session, event.ride_id)
    if ride is None or ride["status"] != "requested" or ride["replayed"]:
        return  # replayed request of a ride that has moved on, or one the recording decides
    if state.mode == "greedy":  # batched: the ride waits in Postgres for the next window's solve
        waiting = WaitingRide(event.ride_id, event.rider_id, event.pickup, event.dropoff, event.ts)
        await assign_greedy(session, state, waiting, after)


async def on_lifecycle(session: AsyncSession, state: MatchingState, event: Lifecycle) -> None:
    kind = event_type(type(event))
    if await rides.event_seen(session, event.event_id):
        return  # already applied (a redelivery, or a cancel the gateway committed with its event)
    ride = await rides.lock_ride(session, event.ride_id)
    if ride is None:
        raise IllegalTransition(f"{kind} for unknown ride {event.ride_id}")
    target = next_status(ride["status"], kind)
    driver_id = event.driver_id
    if ride["driver_id"] is not None and driver_id is not None and driver_id != ride["driver_id"]:
        raise IllegalTransition(f"driver {driver_id} is not assigned to ride {event.ride_id}")
    driver_id = driver_id or ride["driver_id"]
    transition = TRANSITIONS[kind]
    reason = (event.reason or f"cancelled by {event.by}") if isinstance(event, RideCancelled) else None
    await rides.set_ride_status(
        session, event.ride_id, sorted(transition.sources), target, transition.timestamp_column, reason=reason
    )
    await rides.insert_ride_event(session, event)
    if isinstance(event, RideCompleted):
        await rides.store_fare(session, event, ride["surge_multiplier"])
    if isinstance(event, RideCancelled):
        await rides.set_cancelled_by(session, event.ride_id, event.by)
    if driver_id is not None:
        driver_status = DRIVER_STATUS_FOR[target]
        if driver_status is None:
            await state.release(session, driver_id, event.ride_id)
        else:
            await drivers.set_driver_ride_status(session, driver_id, event.ride_id, driver_status)
