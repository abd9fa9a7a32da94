"""Postgres statements of the ``drivers`` table: every writer of driver rows goes through here
(matching's batch upsert, claims and releases; the gateway's cancel; the REST ingest edge).

Positions only move forward by ``last_seq`` (newest seq wins, so a replayed or reordered ping
changes nothing) and a ping sets the status only while the driver holds no ride; the claim is
one conditional UPDATE, so two matching instances can never book the same driver. Every ping
also stamps ``last_seen_ms`` (presence, :mod:`ridehail.domain.presence`), and Postgres keeps
``grid_cell`` (:mod:`ridehail.domain.grid`) in step with the position: together they make "free,
present drivers near here" one indexed query (:func:`free_drivers_in_cells`), the candidate
source every matching instance shares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.domain.events import DriverLocation

_FREE = "driver_id = :d AND status = 'available' AND current_ride_id IS NULL AND last_seen_ms >= :seen"
_CLAIM = text(
    "UPDATE drivers SET status = :s, current_ride_id = :r, updated_at = now() "
    f"WHERE driver_id = (SELECT driver_id FROM drivers WHERE {_FREE} FOR UPDATE SKIP LOCKED) RETURNING lat, lon"
)
_LOOKS_FREE = text(f"SELECT 1 FROM drivers WHERE {_FREE}")  # the committed row, without waiting for its lock


CLAIM_RETRY_S = 0.005
CLAIM_PATIENCE_S = 0.1


async def claim_driver(
    session: AsyncSession, driver_id: str, ride_id: str, status: str = "to_pickup", seen_since_ms: int = 0
) -> tuple[float, float] | None:
    """The atomic claim: the driver becomes ours only if still available, free and seen since
    ``seen_since_ms`` (present). Returns its position. ``status`` is ``to_pickup`` (assigned) or
    ``offered`` (held while the driver answers an offer).

    The claim never waits for a row lock (``SKIP LOCKED``): a claim that waited for a batch of
    pings while holding an earlier claim could close a deadlock cycle with that batch. A driver
    whose row is locked right now (its ping being written, another instance claiming it) but
    looks free is asked again for up to ``CLAIM_PATIENCE_S``; a claim that loses returns None."""
    params = {"d": driver_id, "r": ride_id, "s": status, "seen": seen_since_ms}
    waited = 0.0
    while True:
        row = (await session.execute(_CLAIM, params)).first()
        if row is not None:
            return row.lat, row.lon
        looks_free = (await session.execute(_LOOKS_FREE, params)).first() is not None
        if not looks_free or waited >= CLAIM_PATIENCE_S:
            return None
        await asyncio.sleep(CLAIM_RETRY_S)
        waited += CLAIM_RETRY_S


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
class FreeDriver:
    """A free, present driver: a candidate for a ride."""

    driver_id: str
    lat: float
    lon: float
    accepts_offers: bool


# When a ping counts as seen (ridehail.domain.presence.seen_ms): its own time, capped at the
# moment the statement runs (Postgres' clock).
_SEEN = "least({ts}, (extract(epoch from statement_timestamp()) * 1000)::bigint)"

# One statement per batch: arrays in, newest-seq-wins upsert, the number of rows it changed out.
# A ping only sets the status while the driver holds no ride (matching owns to_pickup/on_trip),
# and only to available/offline. The batch travels as ONE JSON document (msgspec encodes 10k
# pings in ~2 ms; Postgres parses it in C) through the session's asyncpg connection, in the same
# transaction: for 10k-row batches, per-element array encoding and SQLAlchemy's row processing in
# Python cost more than Postgres itself.
UPSERT_LOCATIONS_SQL = f"""
    INSERT INTO drivers (driver_id, lat, lon, heading, speed, status, last_seq, last_ts, accepts_offers,
                         last_seen_ms)
    SELECT driver_id, lat, lon, heading, speed, status, seq, ts, coalesce(offers, false), {_SEEN.format(ts="ts")}
    FROM json_to_recordset($1::json) AS p(driver_id varchar, lat float8, lon float8, heading float8,
                                          speed float8, status varchar, seq bigint, ts bigint, offers boolean)
    ON CONFLICT (driver_id) DO UPDATE SET
        lat = EXCLUDED.lat, lon = EXCLUDED.lon, heading = EXCLUDED.heading, speed = EXCLUDED.speed,
        last_seq = EXCLUDED.last_seq, last_ts = EXCLUDED.last_ts, updated_at = now(),
        accepts_offers = EXCLUDED.accepts_offers, last_seen_ms = EXCLUDED.last_seen_ms,
        status = CASE WHEN drivers.current_ride_id IS NULL AND EXCLUDED.status IN ('available', 'offline')
                      THEN EXCLUDED.status ELSE drivers.status END
    WHERE drivers.last_seq < EXCLUDED.last_seq
"""


async def raw_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under ``session`` (inside its transaction)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def upsert_locations(session: AsyncSession, pings: Sequence[DriverLocation]) -> int:
    """Write the newest ping per driver (already coalesced) in one statement; returns how many
    rows it changed (the others were older than what was stored)."""
    if not pings:
        return 0
    conn = await raw_connection(session)
    status = await conn.execute(UPSERT_LOCATIONS_SQL, _json_encoder.encode(pings).decode())
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"


UPSERT_LOCATIONS_RETURNING_SQL = UPSERT_LOCATIONS_SQL + " RETURNING driver_id"


async def upsert_locations_returning(conn: Any, pings: Sequence[DriverLocation], timeout_s: float) -> set[str]:
    """The same one-statement batch upsert (newest seq wins) on an asyncpg connection or pool
    (autocommit), for callers that answer per ping (the REST ingest edge's batch and group
    commit): returns the driver ids whose row it changed. ``pings`` must hold at most one ping
    per driver (coalesced by the caller, as matching does)."""
    if not pings:
        return set()
    rows = await conn.fetch(UPSERT_LOCATIONS_RETURNING_SQL, _json_encoder.encode(pings).decode(), timeout=timeout_s)
    return {r[0] for r in rows}


async def free_drivers_in_cells(session: AsyncSession, cells: Sequence[int], seen_since_ms: int) -> list[FreeDriver]:
    """Available drivers without a ride, seen since ``seen_since_ms``, in the given grid cells
    (one scan of the ``ix_drivers_free_cell`` index)."""
    if not cells:
        return []
    rows = (
        await session.execute(
            text(
                "SELECT driver_id, lat, lon, accepts_offers FROM drivers "
                "WHERE grid_cell = ANY(:cells) AND status = 'available' AND current_ride_id IS NULL "
                "AND last_seen_ms >= :seen"
            ),
            {"cells": list(cells), "seen": seen_since_ms},
        )
    ).all()
    return [FreeDriver(r.driver_id, r.lat, r.lon, r.accepts_offers) for r in rows]


async def load_driver(session: AsyncSession, driver_id: str) -> Any:
    """One driver's row (position, status, ride, presence), or None."""
    return (
        (
            await session.execute(
                text(
                    "SELECT driver_id, lat, lon, heading, speed, status, current_ride_id, accepts_offers, "
                    "last_seq, last_seen_ms FROM drivers WHERE driver_id = :d"
                ),
                {"d": driver_id},
            )
        )
        .mappings()
        .first()
    )


# The same newest-seq-wins semantics as the batch upsert, one row per statement (the REST ingest
# edge, on a raw asyncpg connection in autocommit).
UPSERT_ONE_SQL = f"""
INSERT INTO drivers (driver_id, lat, lon, heading, speed, status, last_seq, last_ts, last_seen_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {_SEEN.format(ts="$8::bigint")})
ON CONFLICT (driver_id) DO UPDATE SET
    lat = EXCLUDED.lat, lon = EXCLUDED.lon, heading = EXCLUDED.heading, speed = EXCLUDED.speed,
    last_seq = EXCLUDED.last_seq, last_ts = EXCLUDED.last_ts, updated_at = now(),
    last_seen_ms = EXCLUDED.last_seen_ms,
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


async def presence_counts(session: AsyncSession, seen_since_ms: int) -> Any:
    """How many drivers are known, present, and free and present (candidates)."""
    return (
        (
            await session.execute(
                text(
                    "SELECT count(*) AS known, count(*) FILTER (WHERE last_seen_ms >= :seen) AS present, "
                    "count(*) FILTER (WHERE last_seen_ms >= :seen AND status = 'available' "
                    "AND current_ride_id IS NULL) AS free FROM drivers"
                ),
                {"seen": seen_since_ms},
            )
        )
        .mappings()
        .one()
    )


async def silent_on_rides(session: AsyncSession, seen_since_ms: int) -> list[Any]:
    """Drivers that hold a ride (offered, on the way, on the trip) and were not seen since
    ``seen_since_ms``: ride, driver, ride status, last seen."""
    return list(
        (
            await session.execute(
                text(
                    "SELECT r.ride_id, d.driver_id, r.status, d.last_seen_ms FROM drivers d "
                    "JOIN rides r ON r.ride_id = d.current_ride_id "
                    "WHERE d.current_ride_id IS NOT NULL AND d.last_seen_ms < :seen AND NOT r.replayed"
                ),
                {"seen": seen_since_ms},
            )
        )
        .mappings()
        .all()
    )
