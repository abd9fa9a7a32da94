"""What a matching instance keeps between transactions: its settings, the ETA model, the deadlines
of the offers it made, what the last presence sweep saw, and the counters. Nothing here decides
anything: drivers, rides and offers are read from Postgres in each transaction, so an instance
that starts, dies or joins has no state to rebuild or lose. ``After`` collects what to do once
the batch's transaction has committed (a rolled-back batch must not count anything)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.domain.events import LatLon, now_ms
from ridehail.domain.presence import cutoff_ms
from ridehail.matching import metrics as m
from ridehail.matching.eta import EtaModel
from ridehail.matching.offer_clock import OfferClock
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
class PresenceView:
    """What the last presence sweep counted (for /stats and the gauges)."""

    known: int = 0
    present: int = 0
    free: int = 0  # present, available, no ride: the candidates
    waiting: int = 0  # rides waiting for a driver
    silent_on_ride: dict[str, str] = field(default_factory=dict)  # ride id -> its silent driver


@dataclass
class MatchingState:
    settings: MatchingSettings
    eta: EtaModel
    offer_clock: OfferClock = field(default_factory=OfferClock)
    presence: PresenceView = field(default_factory=PresenceView)
    offer_stats: OfferStats = field(default_factory=OfferStats)
    meter: m.RateMeter = field(default_factory=m.RateMeter)
    assigned: int = 0
    expired: int = 0
    claim_conflicts: int = 0

    @property
    def mode(self) -> str:
        return self.settings.matching_mode

    @property
    def radius_m(self) -> float:
        return self.settings.matching_radius_m

    def seen_since_ms(self, now: int | None = None) -> int:
        """Drivers last seen before this are silent (not candidates)."""
        return cutoff_ms(now_ms() if now is None else now, self.settings.driver_presence_ttl_s)

    async def release(self, session: AsyncSession, driver_id: str, ride_id: str) -> bool:
        """Free ``driver_id`` from ``ride_id`` (no-op if it moved on): a candidate again once committed."""
        return await drivers.release_driver(session, driver_id, ride_id) is not None

    def update_gauges(self) -> None:
        m.DRIVERS_AVAILABLE.set(self.presence.free)
        m.DRIVERS_PRESENT.set(self.presence.present)
        m.DRIVERS_SILENT_ON_RIDE.set(len(self.presence.silent_on_ride))
        m.RIDES_WAITING.set(self.presence.waiting)
        m.EVENTS_PER_S.set(self.meter.rate())
