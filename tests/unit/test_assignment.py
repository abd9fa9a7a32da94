"""Property tests of the assignment rules (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ridehail.domain.geo import SERVICE_AREA, haversine_m
from ridehail.matching.assignment import (
    DriverCandidate,
    RiderRequest,
    batched_assign,
    greedy_assign,
    total_eta,
)
from ridehail.matching.eta import StraightLineEta

ETA = StraightLineEta()
RADIUS_M = 3000.0
A = SERVICE_AREA

lats = st.floats(A.min_lat, A.max_lat, allow_nan=False)
lons = st.floats(A.min_lon, A.max_lon, allow_nan=False)
statuses = st.sampled_from(["available", "available", "available", "to_pickup", "on_trip", "offline"])


@st.composite
def drivers_st(draw: st.DrawFn) -> list[DriverCandidate]:
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        status = draw(statuses)
        ride = draw(st.one_of(st.none(), st.just(f"ride-x{i}"))) if status == "available" else f"ride-y{i}"
        out.append(DriverCandidate(f"d{i}", draw(lats), draw(lons), status, ride))
    return out


@st.composite
def riders_st(draw: st.DrawFn) -> list[RiderRequest]:
    n = draw(st.integers(0, 20))
    return [RiderRequest(f"r{i}", draw(lats), draw(lons)) for i in range(n)]


def _check_rules(assignments: list, riders: list[RiderRequest], drivers: list[DriverCandidate]) -> None:
    by_id = {d.driver_id: d for d in drivers}
    rider_by_id = {r.ride_id: r for r in riders}
    driver_ids = [a.driver_id for a in assignments]
    ride_ids = [a.ride_id for a in assignments]
    assert len(set(driver_ids)) == len(driver_ids), "a driver got two rides"
    assert len(set(ride_ids)) == len(ride_ids), "a ride got two drivers"
    for a in assignments:
        d = by_id[a.driver_id]
        assert d.status == "available" and d.current_ride_id is None, f"assigned a busy/offline driver {d}"
        r = rider_by_id[a.ride_id]
        assert haversine_m(r.lat, r.lon, d.lat, d.lon) <= RADIUS_M + 1e-6


@settings(max_examples=200, deadline=None)
@given(riders_st(), drivers_st())
def test_greedy_never_uses_busy_or_offline_drivers_nor_one_driver_twice(riders, drivers) -> None:
    _check_rules(greedy_assign(riders, drivers, ETA, RADIUS_M), riders, drivers)


@settings(max_examples=200, deadline=None)
@given(riders_st(), drivers_st())
def test_batched_never_uses_busy_or_offline_drivers_nor_one_driver_twice(riders, drivers) -> None:
    _check_rules(batched_assign(riders, drivers, ETA, RADIUS_M), riders, drivers)


@settings(max_examples=300, deadline=None)
@given(riders_st(), drivers_st())
def test_batched_serves_at_least_as_many_and_never_a_higher_total_eta(riders, drivers) -> None:
    greedy = greedy_assign(riders, drivers, ETA, RADIUS_M)
    batched = batched_assign(riders, drivers, ETA, RADIUS_M)
    assert len(batched) >= len(greedy)
    if len(batched) == len(greedy):
        assert total_eta(batched) <= total_eta(greedy) + 1e-6


def test_batched_beats_greedy_on_the_classic_trap() -> None:
    # Rider r0 takes the driver r1 needs; greedy then sends r1 a far driver, batched does not.
    drivers = [DriverCandidate("near_both", 57.7000, 11.9700), DriverCandidate("far", 57.7000, 11.9900)]
    riders = [RiderRequest("r0", 57.7000, 11.9750), RiderRequest("r1", 57.7000, 11.9690)]
    greedy = greedy_assign(riders, drivers, ETA, RADIUS_M)
    batched = batched_assign(riders, drivers, ETA, RADIUS_M)
    assert {a.ride_id: a.driver_id for a in greedy} == {"r0": "near_both", "r1": "far"}
    assert {a.ride_id: a.driver_id for a in batched} == {"r0": "far", "r1": "near_both"}
    assert total_eta(batched) < total_eta(greedy)
