"""Every event field is bounded by what the domain allows, and every decoder turns any input into
either an event within those bounds or an EventError with a reason (hypothesis, bounded examples)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ridehail.domain import events
from ridehail.domain.topics import TOPICS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _leaf(t: Any) -> Any:
    while isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    return t


def _leaves(t: Any) -> list[Any]:
    t = _leaf(t)
    if isinstance(t, msgspec.inspect.UnionType):
        return [x for member in t.types for x in _leaves(member)]
    if isinstance(t, msgspec.inspect.StructType):
        return [x for f in t.fields for x in _leaves(f.type)]
    return [t]


def _fields(cls: type[events.Event]) -> list[tuple[str, Any]]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return [(f"{cls.__name__}.{f.name}", leaf) for f in info.fields for leaf in _leaves(f.type)]


ALL_FIELDS = [pair for cls in events.ALL_EVENT_TYPES for pair in _fields(cls)]


@pytest.mark.parametrize(("name", "leaf"), ALL_FIELDS, ids=[n for n, _ in ALL_FIELDS])
def test_every_numeric_and_text_field_has_both_bounds(name: str, leaf: Any) -> None:
    if isinstance(leaf, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        assert leaf.ge is not None or leaf.gt is not None, f"{name} has no lower bound"
        assert leaf.le is not None or leaf.lt is not None, f"{name} has no upper bound"
    elif isinstance(leaf, msgspec.inspect.StrType):
        assert leaf.max_length is not None, f"{name} has no length limit"


def _numeric_fields(cls: type[events.Event]) -> list[tuple[str, Any]]:
    info = msgspec.inspect.type_info(cls)
    out = []
    for f in info.fields:  # type: ignore[attr-defined]
        for leaf in _leaves(f.type):
            if isinstance(leaf, msgspec.inspect.IntType | msgspec.inspect.FloatType) and f.name != "v":
                out.append((f.name, leaf))
    return out


def sample(cls: type[events.Event]) -> events.Event:
    p, d = events.LatLon(57.70, 11.97), events.LatLon(57.71, 11.99)
    common: dict[str, Any] = {"ride_id": "r1", "driver_id": "d1", "rider_id": "u1"}
    by_type: dict[type[events.Event], dict[str, Any]] = {
        events.DriverLocation: {"driver_id": "d1", "seq": 1, "lat": 57.7, "lon": 11.97},
        events.RideRequested: {"ride_id": "r1", "rider_id": "u1", "pickup": p, "dropoff": d},
        events.RideOffered: {**common, "pickup": p, "dropoff": d, "expires_ts": events.now_ms()},
        events.RideOfferAnswered: {"ride_id": "r1", "driver_id": "d1", "offer_id": "o1", "accepted": True},
        events.RideOfferTimedOut: {"ride_id": "r1", "driver_id": "d1", "offer_id": "o1"},
        events.RideAssigned: {**common, "pickup": p, "dropoff": d},
        events.RideArrived: common,
        events.RidePickedUp: common,
        events.RideCompleted: common,
        events.RideCancelled: {"ride_id": "r1", "by": "rider"},
        events.RideExpired: {"ride_id": "r1", "reason": "no driver"},
        events.SurgeChanged: {"cell": "881f1d4a9bfffff", "resolution": 8, "multiplier": 1.5},
    }
    return cls(**by_type[cls])


OUT_OF_RANGE = [(cls, name, leaf) for cls in events.ALL_EVENT_TYPES for name, leaf in _numeric_fields(cls)]


@pytest.mark.parametrize(("cls", "name", "leaf"), OUT_OF_RANGE, ids=[f"{c.__name__}.{n}" for c, n, _ in OUT_OF_RANGE])
@given(excess=st.one_of(st.floats(min_value=1e-3, max_value=1e300), st.integers(min_value=1, max_value=2**80)))
@FUZZ
def test_a_value_beyond_a_bound_is_refused_by_every_decoder(cls: type, name: str, leaf: Any, excess: Any) -> None:
    doc = msgspec.json.decode(events.encode(sample(cls)))
    value: int | float
    if isinstance(leaf, msgspec.inspect.IntType):
        value = (leaf.le if leaf.le is not None else leaf.lt - 1) + max(1, int(excess))
    else:
        value = (leaf.le if leaf.le is not None else leaf.lt) + float(excess)
    doc[name] = value
    with pytest.raises(events.EventError, match="invalid event"):
        events.EventDecoder(cls).decode(msgspec.json.encode(doc))
    doc[name] = -1e300 if isinstance(leaf, msgspec.inspect.FloatType) else -(2**70)
    with pytest.raises(events.EventError):
        events.EventDecoder(cls).decode(msgspec.json.encode(doc))


def test_the_samples_are_valid_events() -> None:
    for cls in events.ALL_EVENT_TYPES:
        event = sample(cls)
        assert events.EventDecoder(cls).decode(events.encode(event)) == event


# -- decoders under arbitrary input ---------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event of some type with some fields replaced by arbitrary JSON (or removed)."""
    cls = draw(st.sampled_from(events.ALL_EVENT_TYPES))
    doc = msgspec.json.decode(events.encode(sample(cls)))
    for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=3, unique=True)):
        if draw(st.booleans()):
            doc[key] = draw(json_values)
        else:
            del doc[key]
    raw = msgspec.json.encode(doc)
    if draw(st.booleans()):
        cut = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8)) + raw[cut:]
    return raw


DECODERS = [events.EventDecoder(*spec.events) for spec in TOPICS] + [events.EventDecoder()]


def _within_bounds(event: events.Event) -> None:
    """Re-decoding the re-encoded event passes every bound (Python-built events skip them)."""
    events.EventDecoder(type(event)).decode(events.encode(event))


@given(raw=st.one_of(mutated_events(), st.binary(max_size=200)))
@FUZZ
def test_every_decoder_answers_an_event_within_bounds_or_an_event_error(raw: bytes) -> None:
    for decoder in DECODERS:
        try:
            event = decoder.decode(raw)
        except events.EventError as exc:
            assert exc.reason
            continue
        assert event.v == events.SCHEMA_VERSION
        _within_bounds(event)


def test_nul_characters_are_refused_by_every_decoder() -> None:
    raw = events.encode(events.DriverLocation(driver_id="d\u0000x", seq=1, lat=57.7, lon=11.97))
    for decoder in DECODERS:
        with pytest.raises(events.EventError, match="NUL"):
            decoder.decode(raw)
