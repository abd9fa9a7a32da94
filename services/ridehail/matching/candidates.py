"""Candidates for a pickup: free, present drivers near it, read from Postgres.

Every matching instance asks the same table, so each sees the whole fleet whichever location
partitions it consumes (``docs/matching.md``, "Scaling out"). The grid cells covering a small
circle are asked first (:data:`FIRST_RADIUS_M`); only when that circle holds fewer drivers than
wanted is the whole search radius asked, so a dense city costs a few cells per request and the
answer is still the nearest drivers (every driver within the small circle is nearer than any
outside it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.domain.geo import haversine_m
from ridehail.domain.grid import cells_within
from ridehail.stores import drivers

FIRST_RADIUS_M = 1000.0


@dataclass(frozen=True, slots=True)
class Candidate:
    driver_id: str
    lat: float
    lon: float
    accepts_offers: bool
    distance_m: float


async def _within(
    session: AsyncSession, lat: float, lon: float, radius_m: float, seen_since_ms: int, exclude: Iterable[str]
) -> list[Candidate]:
    skip = set(exclude)
    rows = await drivers.free_drivers_in_cells(session, cells_within(lat, lon, radius_m), seen_since_ms)
    found = []
    for r in rows:
        if r.driver_id in skip:
            continue
        d = haversine_m(lat, lon, r.lat, r.lon)
        if d <= radius_m:
            found.append(Candidate(r.driver_id, r.lat, r.lon, r.accepts_offers, d))
    found.sort(key=lambda c: (c.distance_m, c.driver_id))
    return found


async def nearest(
    session: AsyncSession,
    lat: float,
    lon: float,
    radius_m: float,
    limit: int,
    seen_since_ms: int,
    exclude: Iterable[str] = (),
) -> list[Candidate]:
    """Up to ``limit`` free drivers seen since ``seen_since_ms`` within ``radius_m``, nearest first."""
    exclude = set(exclude)
    first = min(radius_m, FIRST_RADIUS_M)
    found = await _within(session, lat, lon, first, seen_since_ms, exclude)
    if len(found) < limit and first < radius_m:
        found = await _within(session, lat, lon, radius_m, seen_since_ms, exclude)
    return found[:limit]


async def around(
    session: AsyncSession, points: Sequence[tuple[float, float]], radius_m: float, seen_since_ms: int
) -> list[drivers.FreeDriver]:
    """The free drivers seen since ``seen_since_ms`` in the cells within ``radius_m`` of any of
    ``points``, in one query: the batched solver's columns (it gives pairs beyond the radius an
    infeasible cost itself)."""
    cells: set[int] = set()
    for lat, lon in points:
        cells.update(cells_within(lat, lon, radius_m))
    return await drivers.free_drivers_in_cells(session, sorted(cells), seen_since_ms)
