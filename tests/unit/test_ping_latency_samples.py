"""GPS -> client latency is a ping's first delivery. A car re-sent because a ride event changed its
state carries the time of a ping already delivered: neither the hub's write latency nor the bench
client may count it as a fresh ping (it would look up to one ping interval late)."""

from __future__ import annotations

import time

import orjson

from ridehail.bench.gateway import ClientStats
from ridehail.domain.events import DriverLocation, LatLon, RideAssigned, encode
from ridehail.gateway.hub import Hub


def test_a_car_resent_for_a_ride_event_is_not_a_latency_sample() -> None:
    hub = Hub(car_ttl_s=30.0)
    now_ms = time.time_ns() // 1_000_000
    hub.apply_location(DriverLocation(driver_id="d1", seq=1, lat=57.70, lon=11.97, status="available", ts=now_ms - 50))
    hub.frame_round()
    assert len(hub.counters.write_latency_ms) == 1

    ev = RideAssigned(
        ride_id="r1", rider_id="u", driver_id="d1", pickup=LatLon(57.70, 11.97), dropoff=LatLon(57.71, 11.99)
    )
    hub.apply_ride_event(ev, encode(ev))
    assert "d1" in hub._changed  # the car is re-sent (its ride changed) ...
    hub.frame_round()
    assert len(hub.counters.write_latency_ms) == 1  # ... but it brings no new ping

    late = DriverLocation(driver_id="d1", seq=2, lat=57.701, lon=11.97, status="to_pickup", ts=now_ms - 60)
    hub.apply_location(late)  # a higher seq with an older time: shown, but no newer ping to time
    hub.frame_round()
    assert len(hub.counters.write_latency_ms) == 1

    hub.apply_location(DriverLocation(driver_id="d1", seq=3, lat=57.702, lon=11.97, status="to_pickup", ts=now_ms - 10))
    hub.frame_round()
    assert len(hub.counters.write_latency_ms) == 2


def test_the_bench_client_times_only_pings_it_has_not_had() -> None:
    stats = ClientStats(measuring=True)
    first = orjson.loads(b'[["d1",57.7,11.97,0,1000,null,0],["d2",57.7,11.98,0,1005,null,0]]')
    assert stats.new_pings(first) == [1000, 1005]
    resent = orjson.loads(b'[["d1",57.7,11.97,4,1000,null,0],["d2",57.7,11.98,1,1100,"r1",0]]')
    assert stats.new_pings(resent) == [1100]  # d1 changed state only; d2 brought its next ping
    assert stats.resent == 1
    older = orjson.loads(b'[["d2",57.7,11.98,1,1050,"r1",0]]')
    assert stats.new_pings(older) == []  # an older ping than one already shown is not a delivery
