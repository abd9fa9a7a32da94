"""The presence rule and the grid that finds drivers near a point (pure functions; the grid column
Postgres computes is compared with :func:`cell_of` in ``tests/integration/test_candidates.py``)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ridehail.domain.geo import SERVICE_AREA, haversine_m
from ridehail.domain.grid import cell_of, cells_within
from ridehail.domain.presence import cutoff_ms, is_present, seen_ms, shown_status

A = SERVICE_AREA
lats = st.floats(A.min_lat, A.max_lat, allow_nan=False)
lons = st.floats(A.min_lon, A.max_lon, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(lats, lons, st.floats(10, 8000), st.floats(0, 1), st.floats(0, 2 * math.pi))
def test_the_cells_within_a_radius_hold_every_point_of_the_circle(lat, lon, radius, frac, bearing) -> None:
    # a point at distance frac * radius in direction bearing (spherical destination formula)
    d = frac * radius / 6_371_008.8
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
    l2 = l1 + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    point = (math.degrees(p2), math.degrees(l2))
    assert haversine_m(lat, lon, *point) <= radius * 1.000001
    assert cell_of(*point) in cells_within(lat, lon, radius)


def test_a_3_km_search_is_a_few_dozen_cells_and_a_1_km_one_a_handful() -> None:
    assert len(cells_within(57.70, 11.97, 3000)) <= 64
    assert len(cells_within(57.70, 11.97, 1000)) <= 16
    assert len(set(cells_within(57.70, 11.97, 3000))) == len(cells_within(57.70, 11.97, 3000))


def test_neighbouring_cells_are_different_and_a_cell_is_about_a_kilometre() -> None:
    here = cell_of(57.7050, 11.9790)  # inside a cell, away from its borders
    assert cell_of(57.7050 + 0.011, 11.9790) != here  # 1.2 km north
    assert cell_of(57.7050, 11.9790 + 0.021) != here  # 1.25 km east
    assert cell_of(57.7051, 11.9791) == here


def test_presence_is_the_ping_time_capped_at_when_it_was_applied() -> None:
    assert seen_ms(1_000, 5_000) == 1_000  # a ping from a backlog counts from its own time
    assert seen_ms(9_000, 5_000) == 5_000  # a clock running ahead cannot keep a driver present
    assert cutoff_ms(10_000, 5.0) == 5_000
    assert is_present(5_000, 10_000, 5.0) and not is_present(4_999, 10_000, 5.0)


def test_a_silent_driver_is_shown_offline_unless_it_holds_a_ride() -> None:
    assert shown_status("available", None, present=False) == "offline"
    assert shown_status("available", None, present=True) == "available"
    assert shown_status("on_trip", "ride-1", present=False) == "on_trip"  # flagged, not offline
    assert shown_status("offered", "ride-1", present=False) == "offered"
