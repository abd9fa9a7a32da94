"""A hash of the final ride and driver state, to check that a replay reproduces a run.

What goes in (documented in ``docs/replay.md``), one canonical text line per row, rows ordered
by primary key (bytewise, ``COLLATE "C"``), tables in the order rides then drivers, SHA-256:

* ``rides``: ride_id, rider_id, status, pickup and drop-off (7 decimals, about 1 cm), driver_id,
  reason, and *which* lifecycle timestamps are set (assigned, arrived, picked_up, completed,
  cancelled, expired) but not their values.
* ``drivers``: driver_id, lat, lon (7 decimals), heading, speed (2 decimals), status, last_seq,
  current_ride_id.

Left out on purpose: wall-clock columns (``*_at``, ``updated_at``) and the event time
``drivers.last_ts`` (a replay rewrites event times to "now" by default), and tables that only
hold history or ids (ride_events, processed_events, outbox). Two runs that end in the same rides
and drivers give the same hash, whenever and however fast they ran.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ridehail.common.postgres import to_asyncpg_dsn

RIDES_SQL = """
SELECT ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, driver_id, reason,
       assigned_at IS NOT NULL, arrived_at IS NOT NULL, picked_up_at IS NOT NULL,
       completed_at IS NOT NULL, cancelled_at IS NOT NULL, expired_at IS NOT NULL
FROM rides ORDER BY ride_id COLLATE "C"
"""

DRIVERS_SQL = """
SELECT driver_id, lat, lon, heading, speed, status, last_seq, current_ride_id
FROM drivers ORDER BY driver_id COLLATE "C"
"""

LIFECYCLE = ("assigned", "arrived", "picked_up", "completed", "cancelled", "expired")


@dataclass
class StateHash:
    digest: str
    rides: int
    drivers: int
    ride_statuses: dict[str, int] = field(default_factory=dict)
    driver_statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_hash": self.digest,
            "rides": self.rides,
            "drivers": self.drivers,
            "ride_statuses": self.ride_statuses,
            "driver_statuses": self.driver_statuses,
        }


def _text(value: object) -> str:
    return "" if value is None else str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n")


def ride_line(row: tuple[Any, ...]) -> str:
    ride_id, rider_id, status, plat, plon, dlat, dlon, driver_id, reason, *flags = row
    stamps = ",".join(name for name, on in zip(LIFECYCLE, flags, strict=True) if on)
    return "|".join(
        (
            _text(ride_id),
            _text(rider_id),
            _text(status),
            f"{plat:.7f}",
            f"{plon:.7f}",
            f"{dlat:.7f}",
            f"{dlon:.7f}",
            _text(driver_id),
            _text(reason),
            stamps,
        )
    )


def driver_line(row: tuple[Any, ...]) -> str:
    driver_id, lat, lon, heading, speed, status, last_seq, current_ride_id = row
    return "|".join(
        (
            _text(driver_id),
            f"{lat:.7f}",
            f"{lon:.7f}",
            f"{heading:.2f}",
            f"{speed:.2f}",
            _text(status),
            str(last_seq),
            _text(current_ride_id),
        )
    )


def hash_rows(rides: list[tuple[Any, ...]], drivers: list[tuple[Any, ...]]) -> StateHash:
    h = hashlib.sha256()
    h.update(b"rides\n")
    ride_statuses: dict[str, int] = {}
    for row in rides:
        h.update(ride_line(row).encode() + b"\n")
        ride_statuses[row[2]] = ride_statuses.get(row[2], 0) + 1
    h.update(b"drivers\n")
    driver_statuses: dict[str, int] = {}
    for row in drivers:
        h.update(driver_line(row).encode() + b"\n")
        driver_statuses[row[5]] = driver_statuses.get(row[5], 0) + 1
    return StateHash(h.hexdigest(), len(rides), len(drivers), ride_statuses, driver_statuses)


async def state_hash(database_url: str) -> StateHash:
    """Hash the rides and drivers of the database at ``database_url`` (SQLAlchemy or libpq URL)."""
    dsn = to_asyncpg_dsn(database_url)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rides = [tuple(r) for r in await conn.fetch(RIDES_SQL)]
            drivers = [tuple(r) for r in await conn.fetch(DRIVERS_SQL)]
    finally:
        await conn.close()
    return hash_rows(rides, drivers)
