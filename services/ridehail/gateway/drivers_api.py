"""Driver API (REST): one driver's position, status and presence, as matching judges it.

Presence comes from Postgres (``drivers.last_seen_ms``, the rule in
:mod:`ridehail.domain.presence`): a driver silent for the presence TTL is shown ``offline`` and
``present: false``; a silent driver that holds a ride keeps its ride status and is flagged
``present: false``. Who may ask: the roles that may watch the live map, which shows every car.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ridehail.common.db import transaction
from ridehail.domain.errors import NotFound
from ridehail.domain.events import now_ms
from ridehail.domain.presence import is_present, shown_status
from ridehail.gateway.context import Context, LiveViewer, Sessions
from ridehail.gateway.schemas import DriverIdPath
from ridehail.stores import drivers

router = APIRouter(prefix="/api/drivers", tags=["drivers"])


class DriverView(BaseModel):
    driver_id: str
    status: str = Field(description="what the map shows: offline for a silent driver without a ride")
    reported_status: str = Field(description="the stored status (from its pings and the ride lifecycle)")
    present: bool = Field(description="its newest ping is younger than the presence TTL")
    last_seen_ms: int | None = Field(description="epoch ms of its newest ping (capped at when it was applied)")
    silent_for_s: float | None = Field(description="seconds since its newest ping while not present, else null")
    current_ride_id: str | None
    lat: float
    lon: float
    accepts_offers: bool


def presence_of(last_seen_ms: int, ttl_s: float) -> tuple[bool, float | None]:
    """(present, seconds silent): seconds silent is null while present and for a never-seen driver."""
    now = now_ms()
    if is_present(last_seen_ms, now, ttl_s):
        return True, None
    return False, round((now - last_seen_ms) / 1000, 1) if last_seen_ms else None


@router.get(
    "/{driver_id}",
    response_model=DriverView,
    summary="A driver's position, status and presence",
    responses={404: {"description": "no such driver"}},
)
async def get_driver(driver_id: DriverIdPath, _: LiveViewer, ctx: Context, sessions: Sessions) -> DriverView:
    async with transaction(sessions) as session:
        row = await drivers.load_driver(session, driver_id)
    if row is None:
        raise NotFound("driver not found")
    last_seen = int(row["last_seen_ms"])
    present, silent_for = presence_of(last_seen, ctx.settings.driver_presence_ttl_s)
    return DriverView(
        driver_id=row["driver_id"],
        status=shown_status(row["status"], row["current_ride_id"], present),
        reported_status=row["status"],
        present=present,
        last_seen_ms=last_seen or None,
        silent_for_s=silent_for,
        current_ride_id=row["current_ride_id"],
        lat=row["lat"],
        lon=row["lon"],
        accepts_offers=row["accepts_offers"],
    )
