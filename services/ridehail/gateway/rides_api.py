"""Ride request API (REST): request, look up, cancel and list rides.

``POST /api/rides`` writes the ride row, its first history entry and a ``RideRequested`` outbox row
in ONE transaction and answers ``202 Accepted``: matching picks the request up from the topic
(published by the outbox relay), so the caller never waits for a driver. ``GET`` returns the state
and the transition history; ``DELETE`` cancels before pickup (409 afterwards); ``GET /api/rides``
pages through the trip history, newest first.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from ridehail.common.auth_tokens import Principal
from ridehail.common.db import transaction
from ridehail.common.logging import get_logger
from ridehail.domain.errors import Forbidden, InvalidInput, NotFound
from ridehail.domain.events import LatLon, now_ms
from ridehail.domain.lifecycle import INITIAL_STATUS
from ridehail.domain.presence import is_present
from ridehail.gateway.context import Context, Rider, RiderOrAdmin, Sessions
from ridehail.gateway.ride_requests import cancel_as, create_ride, visible_to
from ridehail.gateway.schemas import (
    ID_PATTERN,
    CancelResult,
    RideAccepted,
    RideHistoryEntry,
    RideIdPath,
    RideRequestBody,
    RideView,
    TripPage,
    TripSummary,
)
from ridehail.stores import drivers, rides

log = get_logger(__name__)

router = APIRouter(prefix="/api/rides", tags=["rides"])
CURSOR_YEARS = (1970, 9000)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RideAccepted,
    summary="Request a ride (202: matching assigns a driver asynchronously)",
    responses={
        401: {},
        403: {"description": "the quote was issued to another rider"},
        404: {"description": "unknown quote"},
        409: {"description": "the rider already has an active ride, or the quote was already used"},
        410: {"description": "the quote expired"},
        422: {"description": "outside the service area, pickup == dropoff, quote for another trip, bad JSON"},
        429: {"description": "too many ride requests by this rider (see Retry-After)"},
    },
)
async def request_ride(
    body: RideRequestBody, response: Response, principal: Rider, ctx: Context, sessions: Sessions
) -> RideAccepted:
    ctx.ride_request_allowed(principal.sub)
    _, surge = ctx.surge_at(body.pickup.lat, body.pickup.lon)
    ride_id = await create_ride(
        sessions,
        principal.sub,
        LatLon(body.pickup.lat, body.pickup.lon),
        LatLon(body.dropoff.lat, body.dropoff.lon),
        quote_id=body.quote_id,
        surge_multiplier=surge,
    )
    ctx.wake_relay()
    response.headers["Location"] = f"/api/rides/{ride_id}"
    log.info("ride_requested", ride_id=ride_id, rider_id=principal.sub)
    return RideAccepted(ride_id=ride_id, status=INITIAL_STATUS)


@router.get("/{ride_id}", response_model=RideView, summary="A ride's state and history (its rider or an admin)")
async def get_ride(ride_id: RideIdPath, principal: RiderOrAdmin, ctx: Context, sessions: Sessions) -> RideView:
    async with transaction(sessions) as session:
        row = await rides.load_ride(session, ride_id)
        if not visible_to(row, principal):
            raise NotFound("ride not found")
        history = await rides.ride_history(session, ride_id)
        driver = await drivers.load_driver(session, row["driver_id"]) if row["driver_id"] else None
    driver_present = None
    if driver is not None:
        driver_present = is_present(int(driver["last_seen_ms"]), now_ms(), ctx.settings.driver_presence_ttl_s)
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
        driver_present=driver_present,
        history=[RideHistoryEntry(**h) for h in history],
    )


async def _cancel(ride_id: str, principal: Principal, ctx: Context, sessions: Sessions) -> CancelResult:
    result, cancelled = await cancel_as(sessions, ride_id, principal)
    if cancelled:
        ctx.wake_relay()
        log.info("ride_cancelled", ride_id=ride_id, by=principal.role, fee=str(result.cancellation_fee))
    return result


_CANCEL_DOC: dict[str, Any] = {
    "response_model": CancelResult,
    "summary": "Cancel a ride before pickup (409 once the rider is on board or the ride has ended)",
    "description": "A rider who cancels after the driver arrived, or longer than the grace period after the "
    "assignment (RIDEHAIL_CANCEL_GRACE_S, default 120 s), pays the cancellation fee (RIDEHAIL_CANCEL_FEE, default "
    "40.00 in RIDEHAIL_FARE_CURRENCY); it is stored on the ride.",
    "responses": {404: {"description": "no such ride (or not yours)"}, 409: {"description": "in progress or ended"}},
}


@router.delete("/{ride_id}", **_CANCEL_DOC)
async def cancel_ride(ride_id: RideIdPath, principal: RiderOrAdmin, ctx: Context, sessions: Sessions) -> CancelResult:
    return await _cancel(ride_id, principal, ctx, sessions)


@router.post("/{ride_id}/cancel", **_CANCEL_DOC)
async def cancel_ride_post(
    ride_id: RideIdPath, principal: RiderOrAdmin, ctx: Context, sessions: Sessions
) -> CancelResult:
    return await _cancel(ride_id, principal, ctx, sessions)


# -- trip history -----------------------------------------------------------------------------------


def encode_cursor(requested_at: datetime, ride_id: str) -> str:
    return base64.urlsafe_b64encode(f"{requested_at.isoformat()}|{ride_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (requested_at, ride_id) a ``next_cursor`` encodes; anything else is an invalid cursor
    (422): not base64 of ``<ISO time with zone>|<ride id>``, a time Postgres cannot hold, an id
    that is not one (too long, control characters)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ride_id = raw.split("|", 1)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or not re.fullmatch(ID_PATTERN, ride_id):
            raise ValueError("incomplete cursor")
        when = when.astimezone(UTC)  # years 1 and 9999 with an offset overflow here, not in Postgres
        if not CURSOR_YEARS[0] <= when.year <= CURSOR_YEARS[1]:
            raise ValueError("cursor time out of range")
        return when, ride_id
    except (ValueError, OverflowError):
        raise InvalidInput("invalid cursor") from None


@router.get(
    "",
    response_model=TripPage,
    summary="Trip history, newest first (riders: their own rides; admins: mine=false lists every ride)",
    responses={403: {"description": "mine=false without the admin role"}, 422: {"description": "bad cursor/limit"}},
)
async def list_rides(
    principal: RiderOrAdmin,
    sessions: Sessions,
    mine: Annotated[bool, Query(description="only the caller's rides (false: every ride, admins only)")] = True,
    limit: Annotated[int, Query(ge=1, le=100, description="rides per page")] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> TripPage:
    if not mine and principal.role != "admin":
        raise Forbidden("only admins can list every rider's rides (mine=false)")
    before = decode_cursor(cursor) if cursor is not None else None
    async with transaction(sessions) as session:
        rows = await rides.trip_page(session, principal.sub if mine else None, before, limit + 1)
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
    next_cursor = encode_cursor(page[-1]["requested_at"], page[-1]["ride_id"]) if more and page else None
    return TripPage(rides=trips, next_cursor=next_cursor)
