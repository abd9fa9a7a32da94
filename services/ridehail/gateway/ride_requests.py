"""The rider's use cases: request a ride (ride row + history + outbox event in ONE transaction)
and cancel it before pickup (racing matching safely under the ride's row lock). Every statement
goes through the shared stores (:mod:`ridehail.stores.rides`, :mod:`ridehail.stores.drivers`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.auth_tokens import Principal
from ridehail.common.db import transaction
from ridehail.common.outbox import add_outbox
from ridehail.common.tariff import current_cancellation_policy
from ridehail.domain.cancellation import cancellation_fee, fee_breakdown
from ridehail.domain.errors import Conflict, NotFound
from ridehail.domain.events import LatLon, RideCancelled, RideRequested
from ridehail.domain.lifecycle import CANCELLABLE_STATUSES, next_status
from ridehail.domain.topics import RIDE_REQUEST
from ridehail.gateway.quote_book import RidePricing, claim_quote
from ridehail.gateway.schemas import CancelResult
from ridehail.stores import drivers, rides


async def create_ride(
    factory: async_sessionmaker[AsyncSession],
    rider_id: str,
    pickup: LatLon,
    dropoff: LatLon,
    *,
    quote_id: str | None = None,
    surge_multiplier: float | None = None,
) -> str:
    """Store a requested ride and queue its ``RideRequested`` event, atomically. Returns the ride id.

    A rider holds one active ride at a time: while one has not ended this raises :class:`Conflict`
    naming it. The check runs under the rider's transaction lock (:func:`rides.lock_rider`), so two
    concurrent requests of one rider cannot both pass it.

    With ``quote_id`` the quote is claimed in the same transaction (its multiplier and price are
    locked; an unknown, foreign, used or expired quote raises the domain error saying so);
    otherwise the ride carries ``surge_multiplier`` (the current one at the pickup)."""
    ride_id = uuid.uuid4().hex
    async with transaction(factory) as session:
        await rides.lock_rider(session, rider_id)
        active = await rides.active_ride_of(session, rider_id)
        if active is not None:
            raise Conflict(
                f"you already have an active ride {active['ride_id']} ({active['status']}): "
                "cancel it or wait until it ends"
            )
        pricing = RidePricing(surge_multiplier) if surge_multiplier is not None else None
        if quote_id is not None:
            pricing = await claim_quote(
                session, quote_id, rider_id, (pickup.lat, pickup.lon), (dropoff.lat, dropoff.lon), ride_id
            )
        event = RideRequested(
            ride_id=ride_id,
            rider_id=rider_id,
            pickup=pickup,
            dropoff=dropoff,
            surge_multiplier=pricing.surge_multiplier if pricing else None,
            quote_id=quote_id,
        )
        await rides.insert_ride(
            session,
            ride_id,
            rider_id,
            pickup,
            dropoff,
            quote_id=quote_id,
            surge_multiplier=pricing.surge_multiplier if pricing else None,
            quoted_price=pricing.quoted_price if pricing else None,
        )
        await rides.insert_ride_event(session, event)
        await add_outbox(session, RIDE_REQUEST.name, ride_id, event)
    return ride_id


def visible_to(row: object, principal: Principal) -> bool:
    return row is not None and (principal.role == "admin" or row["rider_id"] == principal.sub)  # type: ignore[index]


async def cancel_as(
    factory: async_sessionmaker[AsyncSession], ride_id: str, principal: Principal
) -> tuple[CancelResult, bool]:
    """Cancel before pickup, racing matching safely: the ride row is locked, so an offer answer or
    an assignment either committed before (and this cancel frees that driver) or finds the ride
    cancelled afterwards (and is ignored). Returns the result and whether this call cancelled it."""
    policy = current_cancellation_policy()
    async with transaction(factory) as session:
        row = await rides.load_ride(session, ride_id, lock=True)
        if not visible_to(row, principal):
            raise NotFound("ride not found")
        current = row["status"]
        if current == "cancelled":  # idempotent: the first cancel's outcome
            fee = row["cancellation_fee"] or Decimal("0.00")
            result = CancelResult(
                ride_id=ride_id,
                status="cancelled",
                cancelled_by=row["cancelled_by"],
                cancellation_fee=fee,
                currency=policy.currency,
            )
            return result, False
        if current not in CANCELLABLE_STATUSES:
            raise Conflict(f"ride is {current}: it can no longer be cancelled")
        target = next_status(current, "ride.cancelled")
        by_rider = not (principal.role == "admin" and row["rider_id"] != principal.sub)
        fee = cancellation_fee(
            current, "rider" if by_rider else "system", row["assigned_at"], datetime.now(UTC), policy
        )
        event = RideCancelled(
            ride_id=ride_id,
            rider_id=row["rider_id"],
            by="rider" if by_rider else "system",
            reason="cancelled by rider" if by_rider else "cancelled by an admin",
            driver_id=row["driver_id"],
        )
        await rides.mark_cancelled(
            session, ride_id, reason=event.reason, by=event.by, fee=fee, breakdown=fee_breakdown(fee, current, policy)
        )
        if row["driver_id"]:
            await drivers.release_driver(session, row["driver_id"], ride_id)
        await rides.publish(session, event)
    result = CancelResult(
        ride_id=ride_id, status=target, cancelled_by=event.by, cancellation_fee=fee, currency=policy.currency
    )
    return result, True
