"""Postgres statements of the ride lifecycle (SQLAlchemy Core text, asyncpg underneath).

Every write is idempotent: ride history rows are unique by ``event_id``, driver positions only
move forward by ``last_seq``, and the driver claim is one conditional UPDATE, so replaying a batch
after a crash, or racing another matching instance, changes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.common.events import DriverLocation, Event, RideCompleted, RideOffered, RideRequested, event_type

_INSERT_RIDE_EVENT = text(
    "INSERT INTO ride_events (event_id, ride_id, type, ts, payload) "
    "VALUES (:event_id, :ride_id, :type, :ts, CAST(:payload AS jsonb)) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING id"
)


async def insert_ride_event(session: AsyncSession, event: Event) -> bool:
    """Append ``event`` to its ride's history; False if this event id was already recorded."""
    row = (
        await session.execute(
            _INSERT_RIDE_EVENT,
            {
                "event_id": event.event_id,
                "ride_id": event.ride_id,  # type: ignore[attr-defined]
                "type": event_type(type(event)),
                "ts": event.ts,
                "payload": msgspec.json.encode(event).decode(),
            },
        )
    ).first()
    return row is not None


async def event_seen(session: AsyncSession, event_id: str) -> bool:
    row = (await session.execute(text("SELECT 1 FROM ride_events WHERE event_id = :e"), {"e": event_id})).first()
    return row is not None


async def ensure_ride(session: AsyncSession, event: RideRequested | RideOffered, *, replayed: bool = False) -> None:
    """Create the ride row if the gateway's database does not hold it yet (e.g. a replayed stream).
    A ride first seen in a replay is marked ``replayed``: its decisions come from the recording."""
    await session.execute(
        text(
            "INSERT INTO rides (ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, replayed) "
            "VALUES (:r, :u, 'requested', :plat, :plon, :dlat, :dlon, :replayed) ON CONFLICT (ride_id) DO NOTHING"
        ),
        {
            "replayed": replayed,
            "r": event.ride_id,
            "u": event.rider_id or "",
            "plat": event.pickup.lat,
            "plon": event.pickup.lon,
            "dlat": event.dropoff.lat,
            "dlon": event.dropoff.lon,
        },
    )


async def lock_ride(session: AsyncSession, ride_id: str) -> Any:
    return (
        (await session.execute(text("SELECT * FROM rides WHERE ride_id = :r FOR UPDATE"), {"r": ride_id}))
        .mappings()
        .first()
    )


async def set_ride_status(
    session: AsyncSession,
    ride_id: str,
    expected: Sequence[str],
    target: str,
    timestamp_column: str,
    *,
    driver_id: str | None = None,
    reason: str | None = None,
) -> bool:
    """Conditional transition: only moves a ride that is still in one of ``expected``."""
    assert timestamp_column.endswith("_at") and timestamp_column.isidentifier()
    sets = [f"status = :target, {timestamp_column} = clock_timestamp()"]  # when it happened, not txn start
    params: dict[str, Any] = {"r": ride_id, "expected": list(expected), "target": target}
    if driver_id is not None:
        sets.append("driver_id = :d")
        params["d"] = driver_id
    if reason is not None:
        sets.append("reason = :why")
        params["why"] = reason
    sql = f"UPDATE rides SET {', '.join(sets)} WHERE ride_id = :r AND status = ANY(:expected) RETURNING ride_id"
    return (await session.execute(text(sql), params)).first() is not None


async def claim_driver(
    session: AsyncSession, driver_id: str, ride_id: str, status: str = "to_pickup"
) -> tuple[float, float] | None:
    """The atomic claim: the driver becomes ours only if still available and free. Returns its position.
    ``status`` is ``to_pickup`` (assigned) or ``offered`` (held while the driver answers an offer)."""
    row = (
        await session.execute(
            text(
                "UPDATE drivers SET status = :s, current_ride_id = :r, updated_at = now() "
                "WHERE driver_id = :d AND status = 'available' AND current_ride_id IS NULL RETURNING lat, lon"
            ),
            {"d": driver_id, "r": ride_id, "s": status},
        )
    ).first()
    return (row.lat, row.lon) if row is not None else None


async def set_driver_ride_status(session: AsyncSession, driver_id: str, ride_id: str, status: str) -> bool:
    row = (
        await session.execute(
            text(
                "UPDATE drivers SET status = :s, updated_at = now() "
                "WHERE driver_id = :d AND current_ride_id = :r RETURNING driver_id"
            ),
            {"d": driver_id, "r": ride_id, "s": status},
        )
    ).first()
    return row is not None


async def release_driver(session: AsyncSession, driver_id: str, ride_id: str) -> Any:
    """Free a driver from ``ride_id`` (no-op if it already moved on). Returns its row or None."""
    return (
        (
            await session.execute(
                text(
                    "UPDATE drivers SET status = 'available', current_ride_id = NULL, updated_at = now() "
                    "WHERE driver_id = :d AND current_ride_id = :r RETURNING driver_id, lat, lon, status"
                ),
                {"d": driver_id, "r": ride_id},
            )
        )
        .mappings()
        .first()
    )


_json_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class DriverRow:
    driver_id: str
    lat: float
    lon: float
    status: str
    current_ride_id: str | None
    accepts_offers: bool = False


# One statement per batch: arrays in, newest-seq-wins upsert, changed rows out. A ping only sets
# the status while the driver holds no ride (matching owns to_pickup/on_trip), and only to
# available/offline. The batch travels as ONE JSON document (msgspec encodes 10k pings in ~2 ms;
# Postgres parses it in C) through the session's asyncpg connection, in the same transaction:
# for 10k-row batches, per-element array encoding and SQLAlchemy's row processing in Python cost
# more than Postgres itself.
UPSERT_LOCATIONS_SQL = """
    INSERT INTO drivers (driver_id, lat, lon, heading, speed, status, last_seq, last_ts, accepts_offers)
    SELECT driver_id, lat, lon, heading, speed, status, seq, ts, coalesce(offers, false)
    FROM json_to_recordset($1::json) AS p(driver_id varchar, lat float8, lon float8, heading float8,
                                          speed float8, status varchar, seq bigint, ts bigint, offers boolean)
    ON CONFLICT (driver_id) DO UPDATE SET
        lat = EXCLUDED.lat, lon = EXCLUDED.lon, heading = EXCLUDED.heading, speed = EXCLUDED.speed,
        last_seq = EXCLUDED.last_seq, last_ts = EXCLUDED.last_ts, updated_at = now(),
        accepts_offers = EXCLUDED.accepts_offers,
        status = CASE WHEN drivers.current_ride_id IS NULL AND EXCLUDED.status IN ('available', 'offline')
                      THEN EXCLUDED.status ELSE drivers.status END
    WHERE drivers.last_seq < EXCLUDED.last_seq
    RETURNING driver_id, lat, lon, status, current_ride_id, accepts_offers
"""


async def raw_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under ``session`` (inside its transaction)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def upsert_locations(session: AsyncSession, pings: Sequence[DriverLocation]) -> list[DriverRow]:
    """Write the newest ping per driver (already coalesced) in one statement; returns changed rows."""
    if not pings:
        return []
    conn = await raw_connection(session)
    rows = await conn.fetch(UPSERT_LOCATIONS_SQL, _json_encoder.encode(pings).decode())
    return [DriverRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def load_drivers(session: AsyncSession) -> list[DriverRow]:
    rows = (
        await session.execute(text("SELECT driver_id, lat, lon, status, current_ride_id, accepts_offers FROM drivers"))
    ).all()
    return [DriverRow(r.driver_id, r.lat, r.lon, r.status, r.current_ride_id, r.accepts_offers) for r in rows]


async def load_waiting_rides(session: AsyncSession) -> list[Any]:
    return list(
        (
            await session.execute(
                text(
                    "SELECT ride_id, rider_id, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, "
                    "(extract(epoch from requested_at) * 1000)::bigint AS requested_ms "
                    "FROM rides WHERE status = 'requested' AND NOT replayed ORDER BY requested_at"
                )
            )
        )
        .mappings()
        .all()
    )


async def cancel_stale_assignments(session: AsyncSession, older_than_s: float, reason: str) -> list[Any]:
    """Cancel rides still ``assigned`` ``older_than_s`` after assignment; returns (ride, rider, driver)."""
    return list(
        (
            await session.execute(
                text(
                    "UPDATE rides SET status = 'cancelled', cancelled_at = now(), reason = :why "
                    "WHERE status = 'assigned' AND assigned_at < now() - make_interval(secs => :s) "
                    "RETURNING ride_id, rider_id, driver_id"
                ),
                {"why": reason, "s": older_than_s},
            )
        )
        .mappings()
        .all()
    )


async def ride_surge_multiplier(session: AsyncSession, ride_id: str) -> float | None:
    """The multiplier the ride locked at request time (its quote's, or the pickup's surge then)."""
    row = (await session.execute(text("SELECT surge_multiplier FROM rides WHERE ride_id = :r"), {"r": ride_id})).first()
    return None if row is None or row.surge_multiplier is None else float(row.surge_multiplier)


async def store_fare(session: AsyncSession, event: RideCompleted, locked_multiplier: float | None) -> None:
    """Store the final fare of a completed ride: the simulator's (``event.fare``), else computed here
    from the driven distance and time with the shared tariff and the ride's locked multiplier."""
    from ridehail.common.fares import compute_fare, current_tariff

    multiplier = event.surge_multiplier or locked_multiplier or 1.0
    fare = compute_fare(current_tariff(), event.distance_m, event.duration_s, multiplier)
    breakdown = fare.breakdown()
    total = fare.total
    if event.fare is not None:
        total = Decimal(repr(event.fare)).quantize(Decimal("0.01"))
        breakdown["total"] = float(total)
        breakdown["computed_by"] = "simulator"
    await session.execute(
        text("UPDATE rides SET fare = :fare, fare_breakdown = CAST(:b AS jsonb) WHERE ride_id = :r"),
        {"fare": total, "b": json.dumps(breakdown), "r": event.ride_id},
    )
