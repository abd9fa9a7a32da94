"""Surge events as the gateway's hub takes them: only cells of the resolution pricing publishes,
inside the service area, change what quotes read and what the map draws; anything else (not an
H3 cell, another resolution, a cell on the other side of the world) is ignored, and neither the
frame loop nor the quote lookup ever notices it."""

from __future__ import annotations

import h3
import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from ridehail.domain.events import DriverLocation, SurgeChanged, encode
from ridehail.domain.topics import DRIVER_LOCATION, PRICING_SURGE
from ridehail.gateway.feed import LiveFeed
from ridehail.gateway.hub import Hub

HERE = (57.70, 11.97)
CELL = h3.latlng_to_cell(*HERE, 8)


def surge(cell: str, resolution: int = 8, multiplier: float = 2.0) -> SurgeChanged:
    return SurgeChanged(cell=cell, resolution=resolution, multiplier=multiplier)


HOSTILE = [
    surge("not-a-cell"),
    surge("ffffffffffffffff"),
    surge(h3.latlng_to_cell(*HERE, 5), resolution=5),  # a valid cell of another resolution
    surge(h3.latlng_to_cell(*HERE, 9), resolution=8),  # resolution field lying about the cell
    surge(CELL, resolution=3),  # the right cell with a resolution that would move every lookup
    surge(h3.latlng_to_cell(-33.86, 151.21, 8)),  # valid, but nowhere near the service area
]


@pytest.mark.parametrize("event", HOSTILE, ids=[f"{e.cell}@{e.resolution}" for e in HOSTILE])
def test_a_surge_event_outside_the_contract_changes_nothing(event: SurgeChanged) -> None:
    hub = Hub(surge_resolution=8)
    hub.apply_surge(surge(CELL, multiplier=1.5))
    before = hub.surge_at(*HERE)
    assert not hub.apply_surge(event)
    hub.frame_round()  # must not raise (it would be logged and retried every round, forever)
    assert hub.counters.round_errors == 0
    assert hub.surge_at(*HERE) == before == (CELL, 1.5)
    assert hub.surge_resolution == 8
    assert hub.surge == {CELL: 1.5}


def _message(topic: str, value: bytes) -> Message:
    return Message(topic=topic, partition=0, offset=0, value=value)


@settings(max_examples=60, deadline=None)
@given(
    cell=st.one_of(st.text(min_size=1, max_size=16), st.sampled_from([e.cell for e in HOSTILE] + [CELL])),
    resolution=st.integers(0, 15),
    multiplier=st.floats(1.0, 10.0),
)
def test_the_feed_survives_any_surge_event_and_serves_cars(cell: str, resolution: int, multiplier: float) -> None:
    hub = Hub(surge_resolution=8)
    feed = LiveFeed("127.0.0.1:9", hub)  # handle() only: no consumer is created
    ping = DriverLocation(driver_id="car-1", seq=1, lat=HERE[0], lon=HERE[1])
    feed.handle(
        [
            _message(PRICING_SURGE.name, encode(surge(cell, resolution, multiplier))),
            _message(DRIVER_LOCATION.name, encode(ping)),
        ]
    )
    hub.frame_round()
    assert "car-1" in hub.cars
    assert hub.counters.round_errors == 0
    assert hub.surge_resolution == 8
    assert set(hub.surge) <= {CELL}
    assert hub.surge_at(*HERE)[0] == CELL
