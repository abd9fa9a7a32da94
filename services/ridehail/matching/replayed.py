"""Replayed rides: matching follows the recording instead of deciding.

A ride request that arrives with the ``ridehail-replay`` header is stored (``rides.replayed``)
but never matched here: the recording holds what the original run decided, and those decision
events (``ride.offered``, ``ride.offer_timed_out``, ``ride.assigned``, ``ride.expired``, all
replayed with the header too) are applied as recorded, with their driver claims, to rides a
replay created only: the header on a decision about a live ride is refused (dead-lettered). Applying one is
idempotent (its event id is recorded in the ride's history; a seen id is skipped), and does not
depend on what matching would choose today, so a replay ends in the recorded
state at any speed.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.common.logging import get_logger
from ridehail.domain.events import RideAssigned, RideExpired, RideOffered, RideOfferTimedOut, event_type
from ridehail.domain.lifecycle import IllegalTransition
from ridehail.stores import offers, rides

log = get_logger(__name__)

RecordedDecision = RideOffered | RideOfferTimedOut | RideAssigned | RideExpired


async def apply_recorded_decision(session: AsyncSession, event: RecordedDecision) -> None:
    """Move the replayed ride (and its driver) to where the recorded decision put it."""
    if isinstance(event, RideOffered | RideAssigned):
        # The decision may overtake its request (separate topics): the event carries the ride.
        await rides.ensure_ride(session, event, replayed=True)  # type: ignore[arg-type]
    ride = await rides.lock_ride(session, event.ride_id)
    if ride is None:
        log.info("recorded_decision_for_unknown_ride", ride_id=event.ride_id, type=type(event).__name__)
        await rides.insert_ride_event(session, event)
        return
    if not ride["replayed"]:
        # The header is only a claim: a live ride's decisions are matching's own, whoever says otherwise.
        raise IllegalTransition(
            f"recorded {event_type(type(event))} for live ride {event.ride_id}: "
            "only rides a replay created follow a recording"
        )
    if ride["status"] in ("arrived", "in_progress", "completed", "cancelled", "expired"):
        await rides.insert_ride_event(session, event)  # the ride has moved past this decision
        return
    if isinstance(event, RideOffered | RideAssigned):
        status, column = ("offered", "offered_at") if isinstance(event, RideOffered) else ("assigned", "assigned_at")
        near = (event.pickup.lat, event.pickup.lon)
        await offers.hold_for_recorded_decision(session, event.ride_id, event.driver_id, status, column, near)
    elif isinstance(event, RideOfferTimedOut):
        await offers.hold_for_recorded_decision(session, event.ride_id, None, "requested", None)
    else:
        await offers.hold_for_recorded_decision(session, event.ride_id, None, "expired", "expired_at")
        await rides.set_ride_status(session, event.ride_id, ["expired"], "expired", "expired_at", reason=event.reason)
    await rides.insert_ride_event(session, event)
