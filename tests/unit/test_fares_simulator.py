"""The simulator prices the trip it drove: RideCompleted.fare = compute_fare(driven distance,
driven time, the multiplier carried by RideAssigned)."""

from __future__ import annotations

import numpy as np
import pytest

from ridehail.common.tariff import current_tariff
from ridehail.domain.events import LatLon, RideCompleted
from ridehail.domain.fares import compute_fare
from ridehail.domain.roads import RoadGraph
from ridehail.simulator.drivers import FleetConfig
from ridehail.simulator.fleet import Fleet


@pytest.mark.parametrize("surge", [None, 1.7])
def test_completed_ride_carries_the_fare_of_the_driven_trip(surge: float | None) -> None:
    graph = RoadGraph.load()
    fleet = Fleet(graph, FleetConfig(drivers=2, seed=5, mean_online_min=0.0, pickup_wait_s=2.0))
    now = 0.0
    for _ in range(5):
        now += fleet.tick_s
        fleet.step(now, ts_ms=round(now * 1000))
    d = fleet.drivers[0]
    start = d.leg.end_node if d.leg.nodes[-1] >= 0 else 0
    times = graph.etas_from(start, np.arange(graph.n))
    pickup = int(np.flatnonzero((times > 30) & (times < 90))[0])
    onward = graph.etas_from(pickup, np.arange(graph.n))
    dropoff = int(np.flatnonzero((onward > 60) & (onward < 120))[0])
    p, q = graph.node_position(pickup), graph.node_position(dropoff)
    assert fleet.assign(d.driver_id, "r1", LatLon(*p), LatLon(*q), now, "rider-1", surge_multiplier=surge)
    completed: RideCompleted | None = None
    for _ in range(int(1800 / fleet.tick_s)):
        now += fleet.tick_s
        out = fleet.step(now, ts_ms=round(now * 1000))
        completed = next((e for e in out.events if isinstance(e, RideCompleted)), completed)
        if completed is not None:
            break
    assert completed is not None, "the ride never completed"
    multiplier = surge or 1.0
    expected = compute_fare(current_tariff(), completed.distance_m, completed.duration_s, multiplier)
    assert completed.fare == float(expected.total) and completed.surge_multiplier == multiplier
    assert completed.distance_m > 0 and completed.fare >= float(current_tariff().minimum)
