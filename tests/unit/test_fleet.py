"""Fleet engine on a simulated clock: drivers stay on the roads, obey speed limits, keep their
sequence numbers increasing, and carry out rides in order. No sleeping: time is stepped."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from ridehail.domain.events import DriverLocation, LatLon, RideArrived, RideCompleted, RidePickedUp
from ridehail.domain.roads import RoadGraph, haversine_m
from ridehail.simulator.drivers import AssignmentRejected, FleetConfig, Status
from ridehail.simulator.fleet import Fleet
from ridehail.simulator.legs import Cursor, Leg, _arr, _iarr, advance, distance_at, position

M_PER_DEG = 111_195.0


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return RoadGraph.load()


class RoadIndex:
    """Every edge polyline densified to <= 1 m spacing, in a k-d tree of local metres."""

    def __init__(self, graph: RoadGraph) -> None:
        lat, lon, ptr = graph.geom_lat, graph.geom_lon, graph.geom_ptr
        seg_start = np.ones(len(lat) - 1, dtype=bool)
        seg_start[ptr[1:-1] - 1] = False  # no segment between the last point of one edge and the next
        a = np.flatnonzero(seg_start)
        length = haversine_m(lat[a], lon[a], lat[a + 1], lon[a + 1])
        steps = np.maximum(1, np.ceil(length).astype(np.int64))
        idx = np.repeat(a, steps)
        frac = np.concatenate([np.arange(s) / s for s in steps])
        plat = lat[idx] + (lat[idx + 1] - lat[idx]) * frac
        plon = lon[idx] + (lon[idx + 1] - lon[idx]) * frac
        self.kx = math.cos(math.radians(57.7)) * M_PER_DEG
        self.tree = cKDTree(np.column_stack((plon * self.kx, plat * M_PER_DEG)))

    def distance_m(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return self.tree.query(np.column_stack((np.asarray(lon) * self.kx, np.asarray(lat) * M_PER_DEG)))[0]


@pytest.fixture(scope="module")
def roads(graph: RoadGraph) -> RoadIndex:
    return RoadIndex(graph)


def config(**overrides: object) -> FleetConfig:
    values: dict[str, object] = {"drivers": 25, "seed": 11, "mean_online_min": 0.0, "pickup_wait_s": 5.0}
    values.update(overrides)
    return FleetConfig(**values)  # type: ignore[arg-type]


def run(fleet: Fleet, seconds: float, start: float = 0.0) -> Iterator[tuple[float, list[DriverLocation], list[object]]]:
    now = start
    for _ in range(int(round(seconds / fleet.tick_s))):
        now += fleet.tick_s
        out = fleet.step(now, ts_ms=round(now * 1000))
        yield now, out.pings, out.events


def test_pings_stay_on_roads_within_speed_limits_with_increasing_seq(graph: RoadGraph, roads: RoadIndex) -> None:
    fleet = Fleet(graph, config())
    max_limit = float(graph.speed_mps.max())
    last: dict[str, DriverLocation] = {}
    lats: list[float] = []
    lons: list[float] = []
    moving = 0
    for _, pings, _ in run(fleet, 180.0):
        for p in pings:
            d = fleet.driver(p.driver_id)
            assert d is not None
            if p.speed > 0:
                moving += 1
                # reported speed is the current road's speed for this driver: never above its limit
                assert p.speed <= d.leg.seg_limit[min(d.cursor.seg, len(d.leg.seg_limit) - 1)] + 1e-9
            prev = last.get(p.driver_id)
            if prev is not None:
                assert p.seq == prev.seq + 1
                dt = (p.ts - prev.ts) / 1000
                assert dt == pytest.approx(fleet.config.interval, abs=0.002)
                hop = haversine_m(prev.lat, prev.lon, p.lat, p.lon)
                assert hop <= max_limit * dt + 0.5  # straight line <= distance driven
            last[p.driver_id] = p
            lats.append(p.lat)
            lons.append(p.lon)
            assert 0.0 <= p.heading < 360.0
    assert len(last) == 25
    assert len(lats) == 25 * 180
    assert moving > 0.8 * len(lats)
    assert float(roads.distance_m(np.array(lats), np.array(lons)).max()) < 1.5


def test_drivers_actually_move_and_cruise_on(graph: RoadGraph) -> None:
    fleet = Fleet(graph, config(drivers=5, cruise_min_s=20.0, cruise_max_s=40.0))
    first: dict[str, DriverLocation] = {}
    final: dict[str, DriverLocation] = {}
    for _, pings, _ in run(fleet, 300.0):
        for p in pings:
            first.setdefault(p.driver_id, p)
            final[p.driver_id] = p
    for driver_id, p in final.items():
        assert haversine_m(first[driver_id].lat, first[driver_id].lon, p.lat, p.lon) > 50
        assert p.status == "available"


def test_same_seed_same_movements(graph: RoadGraph) -> None:
    def trace(seed: int) -> list[tuple[str, int, float, float]]:
        fleet = Fleet(graph, config(drivers=8, seed=seed))
        return [(p.driver_id, p.seq, p.lat, p.lon) for _, pings, _ in run(fleet, 30.0) for p in pings]

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)


def _assign_nearby(fleet: Fleet, graph: RoadGraph, now: float, driver_index: int = 0) -> tuple[str, str, int, int]:
    d = fleet.drivers[driver_index]
    start = d.leg.end_node if d.leg.nodes[-1] >= 0 else 0
    times = graph.etas_from(start, np.arange(graph.n))
    pickup = int(np.flatnonzero((times > 60) & (times < 120))[0])
    onward = graph.etas_from(pickup, np.arange(graph.n))
    dropoff = int(np.flatnonzero((onward > 90) & (onward < 180))[0])
    ride_id = f"ride-{driver_index}"
    plat, plon = graph.node_position(pickup)
    dlat, dlon = graph.node_position(dropoff)
    assert fleet.assign(d.driver_id, ride_id, LatLon(lat=plat, lon=plon), LatLon(lat=dlat, lon=dlon), now, "rider-1")
    return d.driver_id, ride_id, pickup, dropoff


def test_assigned_driver_goes_to_pickup_then_dropoff_in_order(graph: RoadGraph, roads: RoadIndex) -> None:
    fleet = Fleet(graph, config(drivers=3))
    list(run(fleet, 10.0))
    driver_id, ride_id, pickup, dropoff = _assign_nearby(fleet, graph, 10.0)
    events: list[object] = []
    statuses: list[str] = []
    positions: list[tuple[float, float]] = []
    for _, pings, evs in run(fleet, 3600.0, start=10.0):
        events.extend(e for e in evs if getattr(e, "ride_id", None) == ride_id)
        for p in pings:
            if p.driver_id == driver_id:
                statuses.append(p.status)
                positions.append((p.lat, p.lon))
        if any(isinstance(e, RideCompleted) for e in events):
            break
    assert [type(e) for e in events] == [RideArrived, RidePickedUp, RideCompleted]
    arrived, picked, completed = events
    assert arrived.driver_id == picked.driver_id == completed.driver_id == driver_id  # type: ignore[attr-defined]
    assert completed.rider_id == "rider-1"  # type: ignore[attr-defined]
    assert picked.ts - arrived.ts >= 5000  # type: ignore[attr-defined]
    trip = graph.route(pickup, dropoff)
    assert completed.distance_m == pytest.approx(trip.length_m, rel=0.01, abs=2.0)  # type: ignore[attr-defined]
    assert completed.duration_s >= trip.time_s * 0.99  # type: ignore[attr-defined]
    # status sequence: to_pickup ... on_trip ... available, never back
    order = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
    assert order[-3:] == ["to_pickup", "on_trip", "available"]
    assert float(roads.distance_m(*np.array(positions).T).max()) < 1.5
    d = fleet.driver(driver_id)
    assert d is not None and d.status is Status.AVAILABLE and d.ride is None


def test_reassigned_driver_continues_from_where_it_is(graph: RoadGraph, roads: RoadIndex) -> None:
    fleet = Fleet(graph, config(drivers=10))
    list(run(fleet, 30.0))  # every driver is mid-cruise somewhere along a road
    for index in range(10):
        d = fleet.drivers[index]
        fleet._catch_up(d, 30.0)  # where the driver is at the assignment's instant
        before = position(d.leg, d.cursor)[:2]
        _assign_nearby(fleet, graph, 30.0, driver_index=index)
        after = position(d.leg, d.cursor)[:2]
        assert after == pytest.approx(before, abs=1e-9)  # no jump to an intersection
        lat = np.array(d.leg.lat)
        lon = np.array(d.leg.lon)
        assert float(roads.distance_m(lat, lon).max()) < 1.5  # the new leg follows the roads


def test_cancel_frees_the_driver(graph: RoadGraph) -> None:
    fleet = Fleet(graph, config(drivers=2))
    driver_id, ride_id, _, _ = _assign_nearby(fleet, graph, 0.0)
    list(run(fleet, 5.0))
    freed = fleet.cancel(ride_id, 5.0)
    assert freed is not None and freed.driver_id == driver_id and freed.status is Status.AVAILABLE
    assert fleet.cancel(ride_id, 5.0) is None
    events = [e for _, _, evs in run(fleet, 300.0, start=5.0) for e in evs]
    assert events == []


def test_bad_assignments_are_rejected_with_a_reason(graph: RoadGraph) -> None:
    fleet = Fleet(graph, config(drivers=2))
    here = LatLon(lat=57.7089, lon=11.9746)
    with pytest.raises(AssignmentRejected, match="unknown driver"):
        fleet.assign("drv-99999", "r1", here, here, 0.0)
    with pytest.raises(AssignmentRejected, match="unreachable"):
        fleet.assign("drv-00001", "r2", LatLon(lat=59.33, lon=18.07), here, 0.0)
    with pytest.raises(AssignmentRejected, match="unreachable"):
        fleet.assign("drv-00001", "r2", here, LatLon(lat=57.9, lon=11.5), 0.0)
    assert fleet.assign("drv-00001", "r3", here, here, 0.0)
    assert fleet.assign("drv-00001", "r3", here, here, 0.0) is False  # redelivery: no-op
    with pytest.raises(AssignmentRejected, match="busy with ride r3"):
        fleet.assign("drv-00001", "r4", here, here, 0.0)
    assert not fleet.owns("other-00001") and fleet.owns("drv-00001")


def test_drivers_go_offline_and_come_back(graph: RoadGraph) -> None:
    fleet = Fleet(
        graph, config(drivers=10, mean_online_min=0.5, mean_offline_min=0.5, cruise_min_s=10.0, cruise_max_s=20.0)
    )
    per_driver: dict[str, list[str]] = defaultdict(list)
    for _, pings, _ in run(fleet, 600.0):
        for p in pings:
            per_driver[p.driver_id].append(p.status)
    went_offline = [s for s in per_driver.values() if "offline" in s]
    assert went_offline
    for statuses in went_offline:
        # an offline driver announces it once, then is silent until it is back
        for i, s in enumerate(statuses[:-1]):
            if s == "offline":
                assert statuses[i + 1] == "available"
    assert any(s.index("offline") < len(s) - 1 for s in went_offline)


def test_gps_noise_moves_pings_off_the_centre_line(graph: RoadGraph, roads: RoadIndex) -> None:
    fleet = Fleet(graph, config(drivers=10, gps_noise_m=8.0))
    pings = [p for _, ps, _ in run(fleet, 20.0) for p in ps]
    off = roads.distance_m(np.array([p.lat for p in pings]), np.array([p.lon for p in pings]))
    assert float(np.median(off)) > 2.0


# -- interpolation along a polyline (property test) --------------------------------------------


def make_leg(points: list[tuple[float, float]], speeds: list[float]) -> Leg:
    lat = np.array([p[0] for p in points])
    lon = np.array([p[1] for p in points])
    seg_d = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    sp = np.array(speeds)
    seg_t = np.where(seg_d > 0, seg_d / sp, 0.0)
    return Leg(
        lat=_arr(lat),
        lon=_arr(lon),
        cum_t=_arr(np.concatenate(([0.0], np.cumsum(seg_t)))),
        cum_d=_arr(np.concatenate(([0.0], np.cumsum(seg_d)))),
        seg_speed=_arr(sp),
        seg_limit=_arr(sp),
        node_pt=_iarr(np.array([0, len(points) - 1])),
        nodes=_iarr(np.array([0, 1])),
    )


coords = st.tuples(st.floats(57.65, 57.75), st.floats(11.87, 12.06))


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(coords, min_size=2, max_size=12),
    speed=st.floats(1.0, 30.0),
    steps=st.lists(st.floats(0.0, 120.0), min_size=1, max_size=30),
)
def test_interpolation_stays_on_the_polyline(
    points: list[tuple[float, float]], speed: float, steps: list[float]
) -> None:
    leg = make_leg(points, [speed] * (len(points) - 1))
    cur = Cursor()
    driven = 0.0
    elapsed = 0.0
    for dt in steps:
        done = advance(leg, cur, dt)
        elapsed += dt
        lat, lon, heading, _ = position(leg, cur)
        i = min(cur.seg, len(points) - 2)
        (a_lat, a_lon), (b_lat, b_lon) = points[i], points[i + 1]
        # on segment i: inside its bounding box and (almost) collinear with it
        assert min(a_lat, b_lat) - 1e-9 <= lat <= max(a_lat, b_lat) + 1e-9
        assert min(a_lon, b_lon) - 1e-9 <= lon <= max(a_lon, b_lon) + 1e-9
        cross = (b_lat - a_lat) * (lon - a_lon) - (b_lon - a_lon) * (lat - a_lat)
        assert abs(cross) < 1e-9
        assert 0.0 <= heading < 360.0
        now_driven = distance_at(leg, cur)
        assert now_driven >= driven - 1e-6  # never backwards
        assert now_driven <= leg.total_d + 1e-6
        driven = now_driven
        # constant speed: distance = speed * time until the end of the leg
        assert driven == pytest.approx(min(leg.total_d, speed * elapsed), rel=1e-6, abs=1e-3)
        assert done == (elapsed >= leg.total_t)
    # stepping in one go lands on the same point as stepping in pieces
    one = Cursor()
    advance(leg, one, elapsed)
    assert position(leg, one)[:2] == pytest.approx(position(leg, cur)[:2], abs=1e-9)


def test_settings_size_the_fleet_and_seq_starts_at_the_clock(monkeypatch: pytest.MonkeyPatch, graph: RoadGraph) -> None:
    import time

    from ridehail.common.settings import load_settings
    from ridehail.simulator.runtime import fleet_config_from
    from ridehail.simulator.settings import SimulatorSettings

    monkeypatch.setenv("RIDEHAIL_DRIVERS", "37")  # what `ridehail up --drivers 37` sets
    monkeypatch.setenv("RIDEHAIL_DRIVER_PREFIX", "cab-")
    monkeypatch.setenv("RIDEHAIL_SEED", "9")
    cfg = fleet_config_from(load_settings(SimulatorSettings))
    assert (cfg.drivers, cfg.prefix, cfg.seed, cfg.interval) == (37, "cab-", 9, 1.0)
    assert abs(cfg.seq_start - time.time() * 1000) < 60_000  # a restart never reuses old seq numbers
    assert cfg.slots == 5
    monkeypatch.setenv("RIDEHAIL_PING_SLOTS", "2")
    cfg = fleet_config_from(load_settings(SimulatorSettings))
    assert cfg.slots == 2 and Fleet(graph, cfg).tick_s == 0.5  # two bursts a second
    monkeypatch.setenv("RIDEHAIL_DRIVERS", "-1")
    with pytest.raises(SystemExit, match="RIDEHAIL_DRIVERS"):
        load_settings(SimulatorSettings)


@pytest.mark.parametrize("slots", [2, 5, 10])
def test_start_up_routing_is_bounded_per_second_whatever_the_slots(graph: RoadGraph, slots: int) -> None:
    # 40 idle drivers a second at most: 20, 8 or 4 per tick; the whole fleet is routed after 3 s
    fleet = Fleet(graph, config(drivers=120, slots=slots, routes_per_s=40))
    waiting = []
    for _, _, _ in run(fleet, 3.0):
        waiting.append(sum(d.needs_route for d in fleet.drivers))
    per_tick = [a - b for a, b in zip([120, *waiting], waiting, strict=False)]
    assert max(per_tick) <= math.ceil(40 / slots)
    assert waiting[-1] == 0 and waiting[slots - 1] >= 120 - 40  # one second routes at most 40
