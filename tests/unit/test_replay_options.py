"""Replay option parsing, the event-time rewrite and the state hash's canonical form."""

from __future__ import annotations

import orjson
import pytest

from ridehail.domain.events import DriverLocation, EventDecoder, encode
from ridehail.replay.recorder import parse_duration
from ridehail.replay.replay_options import TimeBound, parse_speed, parse_time_bound, parse_topic_map, rewrite_event_ts
from ridehail.replay.statehash import hash_rows


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1m30s", 90.0), ("1h", 3600.0), ("250ms", 0.25), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "speed"), [("1", 1.0), ("10", 10.0), ("10x", 10.0), ("0.5", 0.5), ("max", None)])
def test_speeds(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["fast", "-2"])
def test_bad_speeds(text: str) -> None:
    with pytest.raises(ValueError):
        parse_speed(text)


def test_time_bounds() -> None:
    assert parse_time_bound("90s") == TimeBound(90_000, relative=True)
    assert parse_time_bound("+1m") == TimeBound(60_000, relative=True)
    assert parse_time_bound("1764190800000") == TimeBound(1_764_190_800_000, relative=False)
    assert parse_time_bound("2025-11-26T21:00:00Z") == TimeBound(1_764_190_800_000, relative=False)
    assert parse_time_bound("2025-11-26T22:00:00+01:00").ms == 1_764_190_800_000
    assert parse_time_bound("90s").resolve(1000) == 91_000
    with pytest.raises(ValueError, match="not a time"):
        parse_time_bound("yesterday")


def test_topic_map() -> None:
    assert parse_topic_map(["a=b", "c=d,e=f"]) == {"a": "b", "c": "d", "e": "f"}
    with pytest.raises(ValueError, match="SOURCE=TARGET"):
        parse_topic_map(["a"])


def test_rewrite_event_ts_on_a_real_event() -> None:
    event = DriverLocation(driver_id="d1", seq=3, lat=57.7, lon=11.97, ts=1234)
    out = rewrite_event_ts(encode(event), 1_800_000_000_000)
    decoded = EventDecoder(DriverLocation).decode(out)
    assert decoded.ts == 1_800_000_000_000
    assert decoded == DriverLocation(
        driver_id="d1", seq=3, lat=57.7, lon=11.97, ts=1_800_000_000_000, event_id=event.event_id
    )


def test_rewrite_event_ts_leaves_other_payloads_alone() -> None:
    assert rewrite_event_ts(None, 5) is None
    assert rewrite_event_ts(b"", 5) == b""
    assert rewrite_event_ts(b"not json ts", 5) == b"not json ts"
    assert rewrite_event_ts(b'{"a":1}', 5) == b'{"a":1}'
    nested = b'{"inner":{"ts":1},"x":2}'
    assert rewrite_event_ts(nested, 5) == nested
    spaced = orjson.loads(rewrite_event_ts(b'{"type": "x", "ts": 17, "y": "\\"ts\\":3"}', 5) or b"")
    assert spaced == {"type": "x", "ts": 5, "y": '"ts":3'}


RIDE = ("r1", "u1", "completed", 57.7, 11.9, 57.71, 11.91, "d1", None, True, True, True, True, False, False)
DRIVER = ("d1", 57.7000001, 11.9, 90.0, 8.5, "available", 42, None)


def test_state_hash_is_canonical_and_sensitive() -> None:
    base = hash_rows([RIDE], [DRIVER])
    assert base.digest == hash_rows([RIDE], [DRIVER]).digest
    assert base.rides == 1 and base.drivers == 1 and base.ride_statuses == {"completed": 1}
    changed_ride = hash_rows([(*RIDE[:2], "cancelled", *RIDE[3:])], [DRIVER])
    changed_driver = hash_rows([RIDE], [(*DRIVER[:6], 43, None)])
    moved = hash_rows([RIDE], [("d1", 57.7000002, *DRIVER[2:])])
    lifecycle = hash_rows([(*RIDE[:-1], True)], [DRIVER])
    digests = {base.digest, changed_ride.digest, changed_driver.digest, moved.digest, lifecycle.digest}
    assert len(digests) == 5
    # a row boundary cannot be faked by a value holding the separator
    assert hash_rows([], [("a|b", *DRIVER[1:])]).digest != hash_rows([], [("a", *DRIVER[1:])]).digest
