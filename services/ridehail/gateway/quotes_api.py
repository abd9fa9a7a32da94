"""Quotes (REST): ``POST /api/quotes`` prices a trip before the rider commits to it.

Distance and time come from the road graph (:mod:`ridehail.domain.routing`), the surge multiplier
is the one the gateway last saw on ``ridehail.pricing.surge.v1`` for the pickup's H3 cell (the
live feed keeps every cell's value in the hub; at start-up the hub is seeded from Postgres
``surge_cells``), and the price comes from the shared tariff (:mod:`ridehail.domain.fares`). The
quote is stored in Postgres and valid for ``RIDEHAIL_FARE_QUOTE_TTL_S`` seconds: a ride requested
with its ``quote_id`` locks that multiplier and price, once (:mod:`ridehail.gateway.quote_book`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fastapi import APIRouter, Response, status

from ridehail.common.db import transaction
from ridehail.common.tariff import current_tariff, quote_ttl_s
from ridehail.domain.errors import InvalidInput, NotFound
from ridehail.domain.fares import compute_fare
from ridehail.gateway.context import Context, GatewayContext, Rider, Sessions
from ridehail.gateway.quote_book import QuoteWriter, find_quote
from ridehail.gateway.schemas import QuoteIdPath, QuoteRequest, QuoteView, StoredQuote

if TYPE_CHECKING:
    from ridehail.domain.routing import QuoteRouter

router = APIRouter(prefix="/api/quotes", tags=["quotes"])

_router_lock = asyncio.Lock()
_built: list[QuoteRouter] = []


def _load_router() -> QuoteRouter:
    from ridehail.domain.routing import shared_router

    return shared_router()


async def trip_router() -> QuoteRouter:
    """The landmark router, built once per process in a worker thread (~1 s) on first use.

    The routing module (numpy, scipy.sparse, the road graph and the tables: about 80 MB of RSS) is
    imported in that thread on the first quote (or at start with ``RIDEHAIL_QUOTE_ROUTER_AT_START``):
    a gateway nobody asks for a quote never loads it.
    """
    if _built:
        return _built[0]
    async with _router_lock:
        if not _built:
            _built.append(await asyncio.to_thread(_load_router))  # the imports too: off the event loop
            # The tables are ~120k long-lived objects; a full GC pass over them stalls every request
            # for 50-90 ms (the quote p99): move them out of the collector's sight.
            gc.collect()
            gc.freeze()
        return _built[0]


def _writer(ctx: GatewayContext, sessions: Sessions) -> QuoteWriter:
    if ctx.quote_writer is None or ctx.quote_writer.engine is not sessions.kw["bind"]:
        ctx.quote_writer = QuoteWriter(sessions)
    return ctx.quote_writer


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=QuoteView,
    summary="Price a trip: road distance and time, the surge at the pickup, a quote id valid for a while",
    responses={
        401: {},
        403: {},
        422: {"description": "outside the service area, pickup == drop-off, no road route, bad JSON"},
        503: {"description": "the database is unavailable"},
    },
)
async def create_quote(
    body: QuoteRequest, response: Response, principal: Rider, ctx: Context, sessions: Sessions
) -> QuoteView:
    pickup, dropoff = body.pickup, body.dropoff  # validated by TripBody: in the area, not the same place
    trips = await trip_router()
    from ridehail.domain.routing import NoRoute  # loaded by trip_router

    try:
        trip = trips.estimate((pickup.lat, pickup.lon), (dropoff.lat, dropoff.lon))
    except NoRoute as exc:
        raise InvalidInput(str(exc)) from None
    cell, multiplier = ctx.surge_at(pickup.lat, pickup.lon)
    fare = compute_fare(current_tariff(), trip.distance_m, trip.duration_s, multiplier)
    quote_id = uuid.uuid4().hex
    ttl = quote_ttl_s()
    breakdown = fare.breakdown()
    row = {
        "q": quote_id,
        "u": principal.sub,
        "plat": pickup.lat,
        "plon": pickup.lon,
        "dlat": dropoff.lat,
        "dlon": dropoff.lon,
        "cell": cell,
        "dist": trip.distance_m,
        "dur": trip.duration_s,
        "m": multiplier,
        "price": fare.total,
        "cur": fare.currency,
        "breakdown": json.dumps(breakdown),
        "ttl": ttl,
    }
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)  # the stored expiry is a few ms later, never earlier
    await _writer(ctx, sessions).insert(row)
    response.headers["Location"] = f"/api/quotes/{quote_id}"
    return QuoteView(
        quote_id=quote_id,
        expires_at=expires_at,
        expires_in_s=int(ttl),
        distance_m=round(trip.distance_m, 1),
        duration_s=round(trip.duration_s, 1),
        cell=cell,
        surge_multiplier=multiplier,
        price=fare.total,
        currency=fare.currency,
        breakdown=breakdown,
    )


@router.get(
    "/{quote_id}",
    response_model=StoredQuote,
    summary="A quote of the caller's: its price, expiry and the ride that used it (if any)",
    responses={401: {}, 403: {}, 404: {"description": "unknown quote, or another rider's"}},
)
async def get_quote(quote_id: QuoteIdPath, principal: Rider, sessions: Sessions) -> StoredQuote:
    async with transaction(sessions) as session:
        row = await find_quote(session, quote_id)
    if row is None or row["rider_id"] != principal.sub:
        raise NotFound("quote not found")
    left = (row["expires_at"] - row["db_now"]).total_seconds()
    return StoredQuote(
        quote_id=row["quote_id"],
        expires_at=row["expires_at"],
        expires_in_s=max(0, int(left)),
        distance_m=row["distance_m"],
        duration_s=row["duration_s"],
        cell=row["cell"],
        surge_multiplier=row["surge_multiplier"],
        price=row["price"],
        currency=row["currency"],
        breakdown=row["breakdown"],
        ride_id=row["ride_id"],
    )
