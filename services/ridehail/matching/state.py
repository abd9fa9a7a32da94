"""Matching's in-memory view, kept in step with what Postgres committed: the H3 index of available
drivers, the rides waiting for one, and the counters. ``After`` collects what to do to that view
once the batch's transaction has committed (a rolled-back batch must not move anything)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.domain.events import LatLon
from ridehail.matching import metrics as m
from ridehail.matching.eta import EtaModel
from ridehail.matching.index import DriverIndex
from ridehail.matching.offers import OfferStats
from ridehail.matching.settings import MatchingSettings
from ridehail.stores import drivers

After = list[Callable[[], None]]


@dataclass(slots=True)
class WaitingRide:
    ride_id: str
    rider_id: str
    pickup: LatLon
    dropoff: LatLon
    requested_ms: int
    excluded: set[str] = field(default_factory=set)  # drivers already offered this ride


@dataclass
class MatchingState:
    settings: MatchingSettings
    eta: EtaModel
    index: DriverIndex
    waiting: dict[str, WaitingRide] = field(default_factory=dict)
    offer_drivers: set[str] = field(default_factory=set)  # drivers whose pings say they answer offers
    offer_stats: OfferStats = field(default_factory=OfferStats)
    meter: m.RateMeter = field(default_factory=m.RateMeter)
    assigned: int = 0
    expired: int = 0
    claim_conflicts: int = 0
    dirty: bool = True  # re-read everything from Postgres before the next round

    @property
    def mode(self) -> str:
        return self.settings.matching_mode

    @property
    def radius_m(self) -> float:
        return self.settings.matching_radius_m

    def index_later(self, after: After, driver_id: str, lat: float, lon: float) -> None:
        """Put ``driver_id`` back into the index once the transaction has committed."""
        after.append(lambda: self.index.upsert(driver_id, lat, lon))

    async def release(self, session: AsyncSession, driver_id: str, ride_id: str, after: After) -> bool:
        """Free ``driver_id`` from ``ride_id`` (no-op if it moved on) and re-index it after commit."""
        released = await drivers.release_driver(session, driver_id, ride_id)
        if released is None:
            return False
        self.index_later(after, driver_id, released["lat"], released["lon"])
        return True

    def update_gauges(self) -> None:
        m.DRIVERS_AVAILABLE.set(len(self.index))
        m.RIDES_WAITING.set(len(self.waiting))
        m.EVENTS_PER_S.set(self.meter.rate())
