"""In-memory H3 index of available drivers (h3 v4): cell -> driver ids, driver -> position.

Candidates for a pickup are the drivers in the ``grid_disk`` around its cell that covers the
search radius, then filtered by exact great-circle distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h3

from ridehail.domain.geo import haversine_m

DEFAULT_RESOLUTION = 8  # ~530 m hexagon edge: a 3 km radius is a k=4 disk (61 cells)


@dataclass(slots=True)
class IndexedDriver:
    driver_id: str
    lat: float
    lon: float
    cell: str


class DriverIndex:
    def __init__(self, resolution: int = DEFAULT_RESOLUTION) -> None:
        self.resolution = resolution
        self._edge_m = h3.average_hexagon_edge_length(resolution, unit="m")
        self._drivers: dict[str, IndexedDriver] = {}
        self._cells: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._drivers)

    def __contains__(self, driver_id: object) -> bool:
        return driver_id in self._drivers

    def get(self, driver_id: str) -> IndexedDriver | None:
        return self._drivers.get(driver_id)

    def upsert(self, driver_id: str, lat: float, lon: float) -> None:
        cell = h3.latlng_to_cell(lat, lon, self.resolution)
        current = self._drivers.get(driver_id)
        if current is not None:
            if current.cell != cell:
                self._discard_from_cell(current)
                self._cells.setdefault(cell, set()).add(driver_id)
            current.lat, current.lon, current.cell = lat, lon, cell
            return
        self._drivers[driver_id] = IndexedDriver(driver_id, lat, lon, cell)
        self._cells.setdefault(cell, set()).add(driver_id)

    def remove(self, driver_id: str) -> None:
        current = self._drivers.pop(driver_id, None)
        if current is not None:
            self._discard_from_cell(current)

    def clear(self) -> None:
        self._drivers.clear()
        self._cells.clear()

    def _discard_from_cell(self, driver: IndexedDriver) -> None:
        members = self._cells.get(driver.cell)
        if members is not None:
            members.discard(driver.driver_id)
            if not members:
                del self._cells[driver.cell]

    def ring_size(self, radius_m: float) -> int:
        """Smallest k whose grid disk surely covers ``radius_m`` around any point of the centre cell."""
        return max(1, int(math.ceil(radius_m / (self._edge_m * 1.5))) + 1)

    def candidates(self, lat: float, lon: float, radius_m: float, limit: int | None = None) -> list[IndexedDriver]:
        """Available drivers within ``radius_m`` (great circle), nearest first."""
        origin = h3.latlng_to_cell(lat, lon, self.resolution)
        found: list[tuple[float, IndexedDriver]] = []
        for cell in h3.grid_disk(origin, self.ring_size(radius_m)):
            for driver_id in self._cells.get(cell, ()):
                d = self._drivers[driver_id]
                dist = haversine_m(lat, lon, d.lat, d.lon)
                if dist <= radius_m:
                    found.append((dist, d))
        found.sort(key=lambda pair: pair[0])
        drivers = [d for _, d in found]
        return drivers[:limit] if limit is not None else drivers
