"""Postgres statements of the ``drivers`` table: every writer of driver rows goes through here
(matching's batch upsert, claims and releases; the gateway's cancel; the REST ingest edge).

Positions only move forward by ``last_seq`` (newest seq wins, so a replayed or reordered ping
changes nothing) and a ping sets the status only while the driver holds no ride; the claim is
one conditional UPDATE, so two matching instances can never book the same driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.domain.events import DriverLocation


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


async def driver_position_if_free(session: AsyncSession, driver_id: str) -> tuple[float, float] | None:
    """The driver's position if it is available and holds no ride (so it may go back into an index)."""
    row = (
        await session.execute(
            text("SELECT lat, lon, status, current_ride_id FROM drivers WHERE driver_id = :d"), {"d": driver_id}
        )
    ).first()
    if row is None or row.status != "available" or row.current_ride_id is not None:
        return None
    return float(row.lat), float(row.lon)


# The same newest-seq-wins semantics as the batch upsert, one row per statement (the REST ingest
# edge, on a raw asyncpg connection in autocommit).
UPSERT_ONE_SQL = """
INSERT INTO drivers (driver_id, lat, lon, heading, speed, status, last_seq, last_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (driver_id) DO UPDATE SET
    lat = EXCLUDED.lat, lon = EXCLUDED.lon, heading = EXCLUDED.heading, speed = EXCLUDED.speed,
    last_seq = EXCLUDED.last_seq, last_ts = EXCLUDED.last_ts, updated_at = now(),
    status = CASE WHEN drivers.current_ride_id IS NULL AND EXCLUDED.status IN ('available', 'offline')
                  THEN EXCLUDED.status ELSE drivers.status END
WHERE drivers.last_seq < EXCLUDED.last_seq
RETURNING driver_id
"""


async def upsert_one(conn: Any, ping: DriverLocation, timeout_s: float) -> bool:
    """Store one ping on an asyncpg connection; False when a newer ping was already stored."""
    row = await conn.fetchrow(
        UPSERT_ONE_SQL,
        ping.driver_id,
        ping.lat,
        ping.lon,
        ping.heading,
        ping.speed,
        ping.status,
        ping.seq,
        ping.ts,
        timeout=timeout_s,
    )
    return row is not None
