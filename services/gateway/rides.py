"""Ride request API (REST): request, look up and cancel a ride.

``POST /api/rides`` writes the ride row, its first history entry and a ``RideRequested`` outbox row
in ONE transaction and answers ``202 Accepted``: matching picks the request up from the topic
(published by the outbox relay), so the caller never waits for a driver. ``GET`` returns the state
and the transition history; ``DELETE`` cancels before pickup (409 afterwards).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
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


class RideRequestBody(BaseModel):
    pickup: Point
    dropoff: Point

    @model_validator(mode="after")
    def _distinct(self) -> RideRequestBody:
        from ridehail.common.geo import haversine_m

        if haversine_m(self.pickup.lat, self.pickup.lon, self.dropoff.lat, self.dropoff.lon) < MIN_TRIP_M:
            raise ValueError("pickup and dropoff are the same place")
        return self


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


async def create_ride(factory: async_sessionmaker[AsyncSession], rider_id: str, pickup: LatLon, dropoff: LatLon) -> str:
    """Store a requested ride and queue its ``RideRequested`` event, atomically. Returns the ride id."""
    ride_id = uuid.uuid4().hex
    event = RideRequested(ride_id=ride_id, rider_id=rider_id, pickup=pickup, dropoff=dropoff)
    async with transaction(factory) as session:
        await session.execute(
            text(
                "INSERT INTO rides (ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon) "
                "VALUES (:r, :u, :s, :plat, :plon, :dlat, :dlon)"
            ),
            {
                "r": ride_id,
                "u": rider_id,
                "s": INITIAL_STATUS,
                "plat": pickup.lat,
                "plon": pickup.lon,
                "dlat": dropoff.lat,
                "dlon": dropoff.lon,
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
    responses={401: {}, 403: {}, 422: {"description": "outside the service area, pickup == dropoff, bad JSON"}},
)
async def request_ride(
    body: RideRequestBody,
    request: Request,
    response: Response,
    principal: Annotated[Principal, Depends(rider)],
) -> RideAccepted:
    async with _database_errors_as_503("request"):
        ride_id = await create_ride(
            _sessions(request),
            principal.sub,
            LatLon(body.pickup.lat, body.pickup.lon),
            LatLon(body.dropoff.lat, body.dropoff.lon),
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


@router.delete(
    "/{ride_id}",
    response_model=RideAccepted,
    summary="Cancel a ride before pickup (409 once the rider is on board or the ride has ended)",
    responses={404: {}, 409: {}},
)
async def cancel_ride(
    ride_id: str, request: Request, principal: Annotated[Principal, Depends(rider_or_admin)]
) -> RideAccepted:
    async with _database_errors_as_503("cancel"), transaction(_sessions(request)) as session:
        row = await _load_ride(session, ride_id, principal, lock=True)
        current = row["status"]
        if current == "cancelled":
            return RideAccepted(ride_id=ride_id, status="cancelled")  # idempotent
        if current not in CANCELLABLE_STATUSES:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"ride is {current}: it can no longer be cancelled")
        target = next_status(current, "ride.cancelled")
        event = RideCancelled(
            ride_id=ride_id,
            rider_id=row["rider_id"],
            by="rider",
            reason="cancelled by rider",
            driver_id=row["driver_id"],
        )
        await session.execute(
            text("UPDATE rides SET status = :s, cancelled_at = now(), reason = :why WHERE ride_id = :r"),
            {"s": target, "why": event.reason, "r": ride_id},
        )
        if row["driver_id"]:
            await release_driver(session, row["driver_id"], ride_id)
        await insert_ride_event(session, event)
        await add_outbox(session, RIDE_EVENT.name, ride_id, event)
    _wake_relay(request)
    log.info("ride_cancelled", ride_id=ride_id, by=principal.role)
    return RideAccepted(ride_id=ride_id, status=target)
