"""The hub's memory is bounded by the cars on the map: ride and offer events about drivers that
never ping (forged, or of cars long gone) are dropped at the next prune."""

from __future__ import annotations

import time

from ridehail.domain.events import DriverLocation, LatLon, RideAssigned, RideOffered, encode
from ridehail.gateway.hub import Hub

A, B = LatLon(57.70, 11.97), LatLon(57.71, 11.99)


def assigned(ride_id: str, driver_id: str) -> RideAssigned:
    return RideAssigned(ride_id=ride_id, rider_id="u", driver_id=driver_id, pickup=A, dropoff=B)


def test_rides_and_offers_of_drivers_not_on_the_map_are_pruned() -> None:
    hub = Hub(car_ttl_s=30.0)
    hub.apply_location(DriverLocation(driver_id="real", seq=1, lat=57.70, lon=11.97, status="on_trip"))
    for i in range(1000):
        forged = assigned(f"r{i}", f"forged-{i}")
        hub.apply_ride_event(forged, encode(forged))
        offered = RideOffered(ride_id=f"o{i}", driver_id=f"forged-o{i}", pickup=A, dropoff=B, expires_ts=1)
        hub.apply_ride_event(offered, encode(offered))
    real = assigned("mine", "real")
    hub.apply_ride_event(real, encode(real))
    hub._prune(time.monotonic())
    assert hub._ride_of_driver == {"real": "mine"}
    assert hub._offer_of_driver == {}
