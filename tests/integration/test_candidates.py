"""The shared candidate source against a real Postgres: the grid cell Postgres computes is the
Python formula's, and "free, present drivers near this pickup" read through the cell index is
exactly the brute-force answer (silent, busy and far drivers left out, nearest first)."""

from __future__ import annotations

import random

import asyncpg
import pytest

from ridehail.common.db import make_engine, make_sessionmaker, transaction
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import now_ms
from ridehail.domain.geo import SERVICE_AREA, haversine_m
from ridehail.domain.grid import cell_of
from ridehail.matching import candidates

pytestmark = pytest.mark.integration

A = SERVICE_AREA


async def test_grid_cells_and_nearest_candidates_match_brute_force(fresh_database_url: str) -> None:
    rng = random.Random(16)
    now = now_ms()
    rows = []
    for i in range(3000):
        lat, lon = rng.uniform(A.min_lat, A.max_lat), rng.uniform(A.min_lon, A.max_lon)
        kind = rng.choices(["free", "silent", "busy", "offline"], [6, 2, 1, 1])[0]
        status = {"busy": "to_pickup", "offline": "offline"}.get(kind, "available")
        ride = f"ride-{i}" if kind == "busy" else None
        seen = now - 60_000 if kind == "silent" else now
        rows.append((f"c{i:04d}", lat, lon, status, ride, seen, kind))
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    engine = make_engine(fresh_database_url)
    try:
        await conn.executemany(
            "INSERT INTO drivers (driver_id, lat, lon, status, current_ride_id, last_seq, last_ts, last_seen_ms, "
            "accepts_offers) VALUES ($1, $2, $3, $4, $5, 1, 0, $6, false)",
            [r[:6] for r in rows],
        )
        stored = {r["driver_id"]: r["grid_cell"] for r in await conn.fetch("SELECT driver_id, grid_cell FROM drivers")}
        assert all(stored[d] == cell_of(lat, lon) for d, lat, lon, *_ in rows)

        sessions = make_sessionmaker(engine)
        seen_since = now - 5_000
        for _ in range(40):
            lat, lon = rng.uniform(A.min_lat, A.max_lat), rng.uniform(A.min_lon, A.max_lon)
            radius, limit = rng.choice([300.0, 1500.0, 3000.0]), rng.choice([1, 8, 32, 500])
            exclude = {r[0] for r in rng.sample(rows, 50)}
            async with transaction(sessions) as session:
                got = await candidates.nearest(session, lat, lon, radius, limit, seen_since, exclude)
            expected = sorted(
                (haversine_m(lat, lon, r[1], r[2]), r[0])
                for r in rows
                if r[6] == "free" and r[0] not in exclude and haversine_m(lat, lon, r[1], r[2]) <= radius
            )[:limit]
            assert [c.driver_id for c in got] == [d for _, d in expected]
    finally:
        await engine.dispose()
        await conn.close()
