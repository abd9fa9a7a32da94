"""The square grid that finds drivers near a point in Postgres.

Every driver row carries ``grid_cell``, a column Postgres computes from ``lat``/``lon`` itself
(a stored generated column, migration 0005), indexed for free drivers. A cell is
``CELL_LAT_DEG`` x ``CELL_LON_DEG`` degrees, about 1.1 x 1.2 km in Gothenburg. Matching asks for
the cells that cover a circle (:func:`cells_within`) and filters the rows by exact distance, so
"free, present drivers near this pickup" is one indexed query whichever instance asks.

Why a grid Postgres computes rather than an H3 cell computed here: the ingest path stays
exactly what it was (no per-ping work in Python; H3 costs about 1 us per ping on these machines,
some 10 % of matching's whole per-ping budget), and the cell changes only when a car crosses a
cell border, so a position update leaves the index untouched most of the time. The grid's cells
are not equal in area away from the service area's latitude and it does not wrap at the 180th
meridian; neither matters for a city.

:data:`GRID_CELL_SQL` and :func:`cell_of` are the same formula (IEEE doubles on both sides; a
test compares them on random points against a real Postgres).
"""

from __future__ import annotations

import math

from ridehail.domain.geo import EARTH_RADIUS_M

CELL_LAT_DEG = 0.01
CELL_LON_DEG = 0.02
ROW_STRIDE = 100_000  # more columns than 360 / CELL_LON_DEG, so (row, column) -> one integer
METRES_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180.0
COVER_MARGIN = 1.01  # a 1 % wider box: points on a cell border land in the box whatever the rounding

GRID_CELL_SQL = (
    f"(floor((lat + 90.0::float8) / {CELL_LAT_DEG}::float8)::bigint * {ROW_STRIDE} "
    f"+ floor((lon + 180.0::float8) / {CELL_LON_DEG}::float8)::bigint)"
)


def cell_of(lat: float, lon: float) -> int:
    """The grid cell of a point (what Postgres stores in ``drivers.grid_cell``)."""
    return math.floor((lat + 90.0) / CELL_LAT_DEG) * ROW_STRIDE + math.floor((lon + 180.0) / CELL_LON_DEG)


def cells_within(lat: float, lon: float, radius_m: float) -> list[int]:
    """Every cell that holds a point within ``radius_m`` of (lat, lon): the cells of the
    latitude/longitude box around the circle (a box of 7 x 7 cells for 3 km)."""
    dlat = radius_m * COVER_MARGIN / METRES_PER_DEG_LAT
    far_lat = min(abs(lat) + dlat, 89.9)  # the circle's widest longitude span is at its pole-side edge
    dlon = min(radius_m * COVER_MARGIN / (METRES_PER_DEG_LAT * math.cos(math.radians(far_lat))), 180.0)
    rows = range(
        math.floor((max(lat - dlat, -90.0) + 90.0) / CELL_LAT_DEG),
        math.floor((min(lat + dlat, 90.0) + 90.0) / CELL_LAT_DEG) + 1,
    )
    cols = range(
        math.floor((max(lon - dlon, -180.0) + 180.0) / CELL_LON_DEG),
        math.floor((min(lon + dlon, 180.0) + 180.0) / CELL_LON_DEG) + 1,
    )
    return [r * ROW_STRIDE + c for r in rows for c in cols]
