"""Ride request API (REST): request, look up and cancel a ride.

``POST /api/rides`` writes the ride row, its first history entry and a ``RideRequested`` outbox row
in ONE transaction and answers ``202 Accepted``: matching picks the request up from the topic
(published by the outbox relay), so the caller never waits for a driver. ``GET`` returns the state
and the transition history; ``DELETE`` cancels before pickup (409 afterwards).
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.auth_deps import require_principal
from ridehail.common.auth_tokens import Principal
from ridehail.common.db import transaction
from ridehail.common.events import LatLon, RideCancelled, RideRequested
from ridehail.common.geo import SERVICE_AREA
from ridehail.common.logging import get_logger
from ridehail.common.outbox import add_outbox
from ridehail.common.topics import RIDE_EVENT, RIDE_REQUEST
from ridehail.matching.cancellation import CANCEL_GRACE_S, CANCELLATION_FEE, CURRENCY, cancellation_fee, fee_breakdown
from ridehail.matching.lifecycle import CANCELLABLE_STATUSES, INITIAL_STATUS, next_status
from ridehail.matching.store import insert_ride_event, release_driver

log = get_logger(__name__)

router = APIRouter(prefix="/api/rides", tags=["rides"])

MIN_TRIP_M = 1.0  # pickup and drop-off closer than this count as the same place


class Point(BaseModel):
    lat: float = Field(ge=-90, le=90, description="WGS84 latitude")
    lon: float = Field(ge=-180, le=180, description="WGS84 longitude")

    @model_validator(mode="after")
    def _inside_service_area(self) -> Point:
        if not SERVICE_AREA.contains(self.lat, self.lon):
            a = SERVICE_AREA
            raise ValueError(f"outside the service area (lat {a.min_lat}..{a.max_lat}, lon {a.min_lon}..{a.max_lon})")
        return self


class TripBody(BaseModel):
    """A pickup and a drop-off inside the service area, not the same place (rides and quotes)."""

    pickup: Point
    dropoff: Point

    @model_validator(mode="after")
    def _distinct(self) -> TripBody:
        from ridehail.common.geo import haversine_m

        if haversine_m(self.pickup.lat, self.pickup.lon, self.dropoff.lat, self.dropoff.lon) < MIN_TRIP_M:
            raise ValueError("pickup and dropoff are the same place")
        return self


class RideRequestBody(TripBody):
    quote_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="A quote from POST /api/quotes: locks its price"
    )


class RideAccepted(BaseModel):
    ride_id: str
    status: str


class RideHistoryEntry(BaseModel):
    type: str
    ts: int
    event_id: str
    recorded_at: datetime


class RideView(BaseModel):
    ride_id: str
    rider_id: str
    status: str
    driver_id: str | None
    pickup: Point | dict[str, float]
    dropoff: Point | dict[str, float]
    reason: str | None
    requested_at: datetime
    assigned_at: datetime | None
    arrived_at: datetime | None
    picked_up_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    expired_at: datetime | None
    history: list[RideHistoryEntry]


async def _principal(request: Request, roles: set[str]) -> Principal:
    dependency = require_principal(lambda: request.app.state.ctx.verifier, roles)
    return await dependency(request)


async def rider(request: Request) -> Principal:
    return await _principal(request, {"rider"})


async def rider_or_admin(request: Request) -> Principal:
    return await _principal(request, {"rider", "admin"})


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    factory = getattr(request.app.state.ctx, "session_factory", None)
    if factory is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="ride requests need the database")
    return factory  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def _database_errors_as_503(action: str) -> AsyncIterator[None]:
    """Postgres away or failing: a 503 with a reason and Retry-After, never a 500."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        log.warning("rides_database_error", action=action, error=type(exc).__name__)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the ride database is unavailable, retry shortly",
            headers={"Retry-After": "1"},
        ) from None


def _wake_relay(request: Request) -> None:
    relay = getattr(request.app.state.ctx, "relay", None)
    if relay is not None:
        relay.wake()


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

    With ``quote_id`` the quote is claimed in the same transaction (its multiplier and price are
    locked; an unknown, foreign, used or expired quote raises a 4xx HTTPException); otherwise the
    ride carries ``surge_multiplier`` (the current one at the pickup)."""
    from ridehail.gateway.quotes import RidePricing, claim_quote

    ride_id = uuid.uuid4().hex
    async with transaction(factory) as session:
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
        await session.execute(
            text(
                "INSERT INTO rides (ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, "
                "quote_id, surge_multiplier, quoted_price) "
                "VALUES (:r, :u, :s, :plat, :plon, :dlat, :dlon, :q, :m, :price)"
            ),
            {
                "r": ride_id,
                "u": rider_id,
                "s": INITIAL_STATUS,
                "plat": pickup.lat,
                "plon": pickup.lon,
                "dlat": dropoff.lat,
                "dlon": dropoff.lon,
                "q": quote_id,
                "m": pricing.surge_multiplier if pricing else None,
                "price": pricing.quoted_price if pricing else None,
            },
        )
        await insert_ride_event(session, event)
        await add_outbox(session, RIDE_REQUEST.name, ride_id, event)
    return ride_id


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RideAccepted,
    summary="Request a ride (202: matching assigns a driver asynchronously)",
    responses={
        401: {},
        403: {"description": "the quote was issued to another rider"},
        404: {"description": "unknown quote"},
        409: {"description": "the quote was already used"},
        410: {"description": "the quote expired"},
        422: {"description": "outside the service area, pickup == dropoff, quote for another trip, bad JSON"},
    },
)
async def request_ride(
    body: RideRequestBody,
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(rider)],
) -> RideAccepted:
    from ridehail.gateway.quotes import surge_multiplier_at

    _, surge = surge_multiplier_at(request, body.pickup.lat, body.pickup.lon)
    async with _database_errors_as_503("request"):
        ride_id = await create_ride(
            _sessions(request),
            principal.sub,
            LatLon(body.pickup.lat, body.pickup.lon),
            LatLon(body.dropoff.lat, body.dropoff.lon),
            quote_id=body.quote_id,
            surge_multiplier=surge,
        )
    _wake_relay(request)
    response.headers["Location"] = f"/api/rides/{ride_id}"
    log.info("ride_requested", ride_id=ride_id, rider_id=principal.sub)
    return RideAccepted(ride_id=ride_id, status=INITIAL_STATUS)


async def _load_ride(session: AsyncSession, ride_id: str, principal: Principal, *, lock: bool = False) -> Any:
    sql = "SELECT * FROM rides WHERE ride_id = :r" + (" FOR UPDATE" if lock else "")
    row = (await session.execute(text(sql), {"r": ride_id})).mappings().first()
    if row is None or (principal.role != "admin" and row["rider_id"] != principal.sub):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="ride not found")
    return row


@router.get("/{ride_id}", response_model=RideView, summary="A ride's state and history (its rider or an admin)")
async def get_ride(
    ride_id: str, request: Request, principal: Annotated[Principal, Depends(rider_or_admin)]
) -> RideView:
    async with _database_errors_as_503("get"), transaction(_sessions(request)) as session:
        row = await _load_ride(session, ride_id, principal)
        history = (
            (
                await session.execute(
                    text("SELECT type, ts, event_id, recorded_at FROM ride_events WHERE ride_id = :r ORDER BY id"),
                    {"r": ride_id},
                )
            )
            .mappings()
            .all()
        )
    return RideView(
        ride_id=row["ride_id"],
        rider_id=row["rider_id"],
        status=row["status"],
        driver_id=row["driver_id"],
        pickup={"lat": row["pickup_lat"], "lon": row["pickup_lon"]},
        dropoff={"lat": row["dropoff_lat"], "lon": row["dropoff_lon"]},
        reason=row["reason"],
        requested_at=row["requested_at"],
        assigned_at=row["assigned_at"],
        arrived_at=row["arrived_at"],
        picked_up_at=row["picked_up_at"],
        completed_at=row["completed_at"],
        cancelled_at=row["cancelled_at"],
        expired_at=row["expired_at"],
        history=[RideHistoryEntry(**h) for h in history],
    )


class CancelResult(BaseModel):
    ride_id: str
    status: str
    cancelled_by: str | None = None
    cancellation_fee: Decimal = Decimal("0.00")
    currency: str = CURRENCY


async def cancel_as(
    factory: async_sessionmaker[AsyncSession], ride_id: str, principal: Principal
) -> tuple[CancelResult, bool]:
    """Cancel before pickup, racing matching safely: the ride row is locked, so an offer answer or
    an assignment either committed before (and this cancel frees that driver) or finds the ride
    cancelled afterwards (and is ignored). Returns the result and whether this call cancelled it."""
    async with transaction(factory) as session:
        row = await _load_ride(session, ride_id, principal, lock=True)
        current = row["status"]
        if current == "cancelled":  # idempotent: the first cancel's outcome
            fee = row["cancellation_fee"] or Decimal("0.00")
            return CancelResult(
                ride_id=ride_id, status="cancelled", cancelled_by=row["cancelled_by"], cancellation_fee=fee
            ), False
        if current not in CANCELLABLE_STATUSES:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"ride is {current}: it can no longer be cancelled")
        target = next_status(current, "ride.cancelled")
        by = "admin" if principal.role == "admin" and row["rider_id"] != principal.sub else "rider"
        fee = cancellation_fee(current, "rider" if by == "rider" else "system", row["assigned_at"], datetime.now(UTC))
        event = RideCancelled(
            ride_id=ride_id,
            rider_id=row["rider_id"],
            by="rider" if by == "rider" else "system",
            reason="cancelled by rider" if by == "rider" else "cancelled by an admin",
            driver_id=row["driver_id"],
        )
        await session.execute(
            text(
                "UPDATE rides SET status = :s, cancelled_at = clock_timestamp(), reason = :why, cancelled_by = :by, "
                "cancellation_fee = CAST(:fee AS numeric), "
                "fare = CASE WHEN :charged THEN CAST(:fee AS numeric) ELSE fare END, "
                "fare_breakdown = CASE WHEN :charged THEN CAST(:breakdown AS jsonb) ELSE fare_breakdown END "
                "WHERE ride_id = :r"
            ),
            {
                "s": target,
                "why": event.reason,
                "by": event.by,
                "fee": fee,
                "charged": fee > 0,
                "breakdown": json.dumps(fee_breakdown(fee, current)),
                "r": ride_id,
            },
        )
        if row["driver_id"]:
            await release_driver(session, row["driver_id"], ride_id)
        await insert_ride_event(session, event)
        await add_outbox(session, RIDE_EVENT.name, ride_id, event)
    return CancelResult(ride_id=ride_id, status=target, cancelled_by=event.by, cancellation_fee=fee), True


async def _cancel(ride_id: str, request: Request, principal: Principal) -> CancelResult:
    async with _database_errors_as_503("cancel"):
        result, cancelled = await cancel_as(_sessions(request), ride_id, principal)
    if cancelled:
        _wake_relay(request)
        log.info("ride_cancelled", ride_id=ride_id, by=principal.role, fee=str(result.cancellation_fee))
    return result


_CANCEL_DOC: dict[str, Any] = {
    "response_model": CancelResult,
    "summary": "Cancel a ride before pickup (409 once the rider is on board or the ride has ended)",
    "description": f"A rider who cancels after the driver arrived, or more than {CANCEL_GRACE_S:g} s after the "
    f"assignment, pays a {CANCELLATION_FEE} {CURRENCY} cancellation fee (stored on the ride).",
    "responses": {404: {"description": "no such ride (or not yours)"}, 409: {"description": "in progress or ended"}},
}


@router.delete("/{ride_id}", **_CANCEL_DOC)
async def cancel_ride(
    ride_id: str, request: Request, principal: Annotated[Principal, Depends(rider_or_admin)]
) -> CancelResult:
    return await _cancel(ride_id, request, principal)


@router.post("/{ride_id}/cancel", **_CANCEL_DOC)
async def cancel_ride_post(
    ride_id: str, request: Request, principal: Annotated[Principal, Depends(rider_or_admin)]
) -> CancelResult:
    return await _cancel(ride_id, request, principal)


# -- trip history -----------------------------------------------------------------------------------
class TripSummary(BaseModel):
    ride_id: str
    rider_id: str
    status: str
    driver_id: str | None
    pickup: dict[str, float]
    dropoff: dict[str, float]
    requested_at: datetime
    completed_at: datetime | None
    cancelled_at: datetime | None
    expired_at: datetime | None
    reason: str | None
    cancelled_by: str | None
    quoted_price: Decimal | None
    surge_multiplier: float | None
    fare: Decimal | None
    cancellation_fee: Decimal | None


class TripPage(BaseModel):
    rides: list[TripSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null on the last")


def _encode_cursor(requested_at: datetime, ride_id: str) -> str:
    return base64.urlsafe_b64encode(f"{requested_at.isoformat()}|{ride_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ride_id = raw.split("|", 1)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or not ride_id:
            raise ValueError("incomplete cursor")
        return when, ride_id
    except ValueError:
        raise HTTPException(422, detail="invalid cursor") from None


_TRIP_COLUMNS = (
    "ride_id, rider_id, status, driver_id, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, requested_at, "
    "completed_at, cancelled_at, expired_at, reason, cancelled_by, quoted_price, surge_multiplier, fare, "
    "cancellation_fee"
)


@router.get(
    "",
    response_model=TripPage,
    summary="Trip history, newest first (riders: their own rides; admins: mine=false lists every ride)",
    responses={403: {"description": "mine=false without the admin role"}, 422: {"description": "bad cursor/limit"}},
)
async def list_rides(
    request: Request,
    principal: Annotated[Principal, Depends(rider_or_admin)],
    mine: Annotated[bool, Query(description="only the caller's rides (false: every ride, admins only)")] = True,
    limit: Annotated[int, Query(ge=1, le=100, description="rides per page")] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> TripPage:
    if not mine and principal.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only admins can list every rider's rides (mine=false)")
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if mine:
        where.append("rider_id = :me")
        params["me"] = principal.sub
    if cursor is not None:
        params["t"], params["after"] = _decode_cursor(cursor)
        where.append("(requested_at, ride_id) < (:t, :after)")
    sql = f"SELECT {_TRIP_COLUMNS} FROM rides"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY requested_at DESC, ride_id DESC LIMIT :limit"
    async with _database_errors_as_503("history"), transaction(_sessions(request)) as session:
        rows = (await session.execute(text(sql), params)).mappings().all()
    page = rows[:limit]
    trips = [
        TripSummary(
            **{k: r[k] for k in r if not k.startswith(("pickup_", "dropoff_"))},
            pickup={"lat": r["pickup_lat"], "lon": r["pickup_lon"]},
            dropoff={"lat": r["dropoff_lat"], "lon": r["dropoff_lon"]},
        )
        for r in page
    ]
    more = len(rows) > limit
    next_cursor = _encode_cursor(page[-1]["requested_at"], page[-1]["ride_id"]) if more and page else None
    return TripPage(rides=trips, next_cursor=next_cursor)
