"""The ingestion edge's validation: the same decoder as the event path plus the service area;
each kind of bad ping maps to its own 4xx with a reason, and a good ping passes untouched."""

from __future__ import annotations

import msgspec
import pytest

from ridehail.domain.events import DriverLocation, encode
from ridehail.ingest.app import PingValidationError, parse_ping
from ridehail.simulator.httpclient import _header_value

GOOD = DriverLocation(driver_id="drv-1", seq=7, lat=57.70, lon=11.97, heading=10.0, speed=5.0)


def _raw(**changes: object) -> bytes:
    data = msgspec.json.decode(encode(GOOD))
    data.update(changes)
    return msgspec.json.encode(data)


def test_a_good_ping_comes_back_as_the_event() -> None:
    ping = parse_ping(encode(GOOD), 4096)
    assert ping == GOOD


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"", 400, "empty message"),
        (b'{"type":"driver.location","driver_id":', 400, "malformed JSON"),
        (b"not json at all", 400, "malformed JSON"),
        (_raw(type="ride.requested"), 422, "unexpected event type"),
        (_raw(seq=-1), 422, "invalid event"),
        (_raw(lat=91.0), 422, "invalid event"),
        (_raw(heading=360.0), 422, "invalid event"),
        (_raw(status="flying"), 422, "invalid event"),
        (_raw(driver_id=""), 422, "invalid event"),
        (_raw(v=2), 422, "unsupported schema version"),
        (_raw(lat=59.33, lon=18.07), 422, "outside the service area"),
    ],
)
def test_bad_pings_get_a_4xx_with_the_reason(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(PingValidationError) as err:
        parse_ping(body, 4096)
    assert err.value.status == status
    assert reason in err.value.reason


def test_missing_required_field_is_named() -> None:
    data = msgspec.json.decode(encode(GOOD))
    del data["driver_id"]
    with pytest.raises(PingValidationError) as err:
        parse_ping(msgspec.json.encode(data), 4096)
    assert err.value.status == 422
    assert "driver_id" in err.value.reason


def test_oversized_body_is_413_before_decoding() -> None:
    body = encode(GOOD) + b" " * 5000
    with pytest.raises(PingValidationError) as err:
        parse_ping(body, 4096)
    assert err.value.status == 413


def test_http_client_reads_headers_case_insensitively() -> None:
    head = b"http/1.1 503 service unavailable\r\ncontent-length: 12\r\nretry-after: 1\r\nconnection: close"
    assert _header_value(head, b"content-length") == b"12"
    assert _header_value(head, b"retry-after") == b"1"
    assert _header_value(head, b"connection") == b"close"
    assert _header_value(head, b"x-missing") is None
