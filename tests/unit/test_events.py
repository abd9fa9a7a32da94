from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ridehail.domain import events


def test_round_trip_keeps_every_field() -> None:
    ping = events.DriverLocation(
        driver_id="drv-00001", seq=7, lat=57.7, lon=11.97, heading=359.5, speed=13.9, status="on_trip"
    )
    decoded = events.EventDecoder(events.DriverLocation).decode(events.encode(ping))
    assert decoded == ping
    assert msgspec.json.decode(events.encode(ping))["type"] == "driver.location"


@given(
    seq=st.integers(min_value=0, max_value=events.MAX_SEQ),
    lat=st.floats(min_value=-90, max_value=90),
    lon=st.floats(min_value=-180, max_value=180),
    heading=st.floats(min_value=0, max_value=359.999),
)
def test_any_valid_ping_round_trips(seq: int, lat: float, lon: float, heading: float) -> None:
    ping = events.DriverLocation(driver_id="d", seq=seq, lat=lat, lon=lon, heading=heading)
    assert events.EventDecoder(events.DriverLocation).decode(events.encode(ping)) == ping


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "malformed JSON"),
        (b'{"type":"driver.location","driver_id":"d","seq":1,"lat":91,"lon":0}', "invalid event"),
        (b'{"type":"driver.location","driver_id":"d","lat":1,"lon":0}', "seq"),
        (b'{"type":"driver.teleport","driver_id":"d"}', "unexpected event type"),
        (b'{"type":"driver.location","v":2,"driver_id":"d","seq":1,"lat":1,"lon":0}', "version"),
        (b'{"type":"driver.location","driver_id":"d","seq":-1,"lat":1,"lon":0}', "invalid event"),
    ],
)
def test_bad_messages_raise_event_error_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(events.EventError) as err:
        events.EventDecoder(events.DriverLocation).decode(raw)
    assert reason in err.value.reason


def test_decoder_limited_to_its_types() -> None:
    req = events.RideRequested(
        ride_id="r", rider_id="u", pickup=events.LatLon(57.7, 11.9), dropoff=events.LatLon(57.71, 11.95)
    )
    with pytest.raises(events.EventError, match="unexpected event type"):
        events.EventDecoder(events.DriverLocation).decode(events.encode(req))
    assert events.EventDecoder().decode(events.encode(req)) == req


def test_event_ids_are_unique() -> None:
    ids = {events.DriverLocation(driver_id="d", seq=i, lat=0, lon=0).event_id for i in range(1000)}
    assert len(ids) == 1000
