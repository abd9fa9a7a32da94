"""The simulated fleet's data: a driver, its ride, the fleet's configuration and one step's output."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum

from ridehail.domain.events import DriverLocation, Event
from ridehail.simulator.legs import M_PER_DEG_LAT, Cursor, Leg, position


class Status(StrEnum):
    AVAILABLE = "available"
    TO_PICKUP = "to_pickup"
    ON_TRIP = "on_trip"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    drivers: int = 200
    interval: float = 1.0
    seed: int | None = None
    prefix: str = "drv-"
    gps_noise_m: float = 0.0
    pickup_wait_s: float = 5.0
    mean_online_min: float = 45.0  # 0: never offline
    mean_offline_min: float = 5.0
    max_snap_m: float = 500.0
    cruise_min_s: float = 60.0
    cruise_max_s: float = 240.0
    speed_factor_min: float = 0.7  # per edge: drive at 70-100 % of the edge's free-flow speed
    slots: int = 5
    seq_start: int = 0  # first seq of every driver (the service uses the wall clock in ms)
    routes_per_s: int = 1280  # cruise routes computed per second of fleet time at most (spreads start-up cost)
    answers_offers: bool = True  # pings say so; matching then offers rides instead of assigning
    accept_probability: float = 0.9  # a free driver accepts an offer with this probability
    answer_delay_max_s: float = 1.5  # drivers answer after 0.2 s up to this (fleet seconds)
    cancel_probability: float = 0.0  # an assigned driver cancels before pickup with this probability
    cancel_after_s: tuple[float, float] = (10.0, 60.0)  # ... this long after the assignment


@dataclass(slots=True)
class RideJob:
    ride_id: str
    rider_id: str | None
    pickup_node: int
    dropoff_node: int
    assigned_at: float
    waiting_until: float | None = None  # set on arrival at the pickup
    picked_up_at: float | None = None
    odometer_at_pickup: float = 0.0
    cancel_at: float | None = None  # the driver gives up on the way to the pickup at this time
    surge_multiplier: float = 1.0  # locked at request time (carried by RideAssigned); prices the fare


@dataclass(slots=True)
class PendingOffer:
    ride_id: str
    offer_id: str
    driver_id: str
    answer_at: float
    accepted: bool
    reason: str


@dataclass(slots=True)
class Driver:
    index: int
    driver_id: str
    status: Status
    leg: Leg
    cursor: Cursor
    last_t: float
    seq: int
    next_churn_at: float
    ride: RideJob | None = None
    odometer_m: float = 0.0  # total distance driven
    needs_route: bool = True
    announced_offline: bool = False


class AssignmentRejected(ValueError):
    """An assignment the fleet cannot carry out; ``reason`` goes into the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class StepOutput:
    pings: list[DriverLocation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def gps_ping(d: Driver, ts: int, moving: bool, config: FleetConfig, rng: random.Random, run_id: str) -> DriverLocation:
    """The driver's next ping: its position on the leg (plus GPS noise), heading, speed, status."""
    lat, lon, heading, speed = position(d.leg, d.cursor)
    if not moving:
        speed = 0.0
    noise = config.gps_noise_m
    if noise > 0:
        lat += rng.gauss(0.0, noise) / M_PER_DEG_LAT
        lon += rng.gauss(0.0, noise) / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    d.seq += 1
    return DriverLocation(
        event_id=f"{run_id}-{d.index}-{d.seq}",
        ts=ts,
        driver_id=d.driver_id,
        seq=d.seq,
        lat=lat,
        lon=lon,
        heading=heading,
        speed=speed,
        status=d.status.value,
        offers=config.answers_offers,
    )
