"""The gateway's REST bodies and answers (pydantic): trips, rides, trip history, quotes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field, model_validator

from ridehail.domain.geo import SERVICE_AREA, haversine_m

MIN_TRIP_M = 1.0  # pickup and drop-off closer than this count as the same place
# Ride and quote ids: 1-64 characters, none of them a control character (NUL included): anything
# else is refused with a 422 here, before Postgres could refuse it.
ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"
RideIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="a ride id")]
DriverIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="a driver id")]
QuoteIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="a quote id")]


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
        if haversine_m(self.pickup.lat, self.pickup.lon, self.dropoff.lat, self.dropoff.lon) < MIN_TRIP_M:
            raise ValueError("pickup and dropoff are the same place")
        return self


class RideRequestBody(TripBody):
    quote_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=ID_PATTERN,
        description="A quote from POST /api/quotes: locks its price",
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
    driver_present: bool | None = Field(
        default=None,
        description="whether the ride's driver is pinging (false: silent for the presence TTL, the ride is "
        "flagged, not cancelled); null without a driver",
    )
    history: list[RideHistoryEntry]


class CancelResult(BaseModel):
    ride_id: str
    status: str
    cancelled_by: str | None = None
    cancellation_fee: Decimal = Decimal("0.00")
    currency: str


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


class QuoteRequest(TripBody):
    pass


class QuoteView(BaseModel):
    quote_id: str
    expires_at: datetime
    expires_in_s: int
    distance_m: float
    duration_s: float
    cell: str
    surge_multiplier: float
    price: Decimal
    currency: str
    breakdown: dict[str, Any]


class StoredQuote(QuoteView):
    ride_id: str | None
