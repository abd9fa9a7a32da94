"""Event contracts: every message on a ridehail topic is one of these structs, as JSON.

Every event carries ``event_id`` (unique), ``type``, ``v`` (schema version) and ``ts`` (epoch
milliseconds at the source), plus its payload. Encoding and decoding use msgspec (typed, ~10x the
stdlib); decoding validates types, ranges and the version, so a bad message fails here and can be
dead-lettered with the reason. Every number and every string of every event is bounded by what the
domain allows (the ``MAX_*`` constants below): a value no ride could have never reaches a consumer.
"""

from __future__ import annotations

import operator
import time
import uuid
from typing import Annotated, Literal

import msgspec

# -- the domain's bounds: every field of every event is inside one of these ------------------------
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00Z in epoch milliseconds
MAX_SEQ = 2**53 - 1  # exact in a double (JSON readers in any language), far beyond ms-based sequences
MAX_FARE = 100_000.0  # currency units: a 1,000 km trip at the highest surge stays below it
MAX_DISTANCE_M = 1_000_000.0
MAX_DURATION_S = 86_400.0  # a day: no trip, pickup or ETA lasts longer
MAX_ATTEMPT = 1_000  # offers per ride
MAX_COUNT = 10_000_000  # requests or drivers counted in one cell's window
MAX_TEXT = 500  # characters of a free-text reason

Lat = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0, description="WGS84 latitude, degrees")]
Lon = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0, description="WGS84 longitude, degrees")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Ts = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS_MS, description="epoch milliseconds")]
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
Fare = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_FARE, description="final fare, currency units")]
Metres = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DISTANCE_M, description="metres")]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DURATION_S, description="seconds")]
Multiplier = Annotated[float, msgspec.Meta(ge=1.0, le=10.0)]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPT)]
Version = Annotated[int, msgspec.Meta(ge=0, le=1_000)]
DriverStatus = Literal["available", "to_pickup", "on_trip", "offline"]
RideStatus = Literal["requested", "offered", "assigned", "arrived", "in_progress", "completed", "cancelled", "expired"]

SCHEMA_VERSION = 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_event_id() -> str:
    return uuid.uuid4().hex


class EventError(ValueError):
    """A message that is not a valid event; ``reason`` goes into the dead-letter headers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Event(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", omit_defaults=False):
    """Envelope fields shared by every event."""

    event_id: Id = msgspec.field(default_factory=new_event_id)
    v: Version = SCHEMA_VERSION
    ts: Ts = msgspec.field(default_factory=now_ms)


class LatLon(msgspec.Struct, frozen=True):
    lat: Lat
    lon: Lon


class DriverLocation(Event, tag="driver.location", frozen=True, kw_only=True):
    """A GPS ping. Key: driver_id. ``seq`` is per driver and strictly increasing."""

    driver_id: Id
    seq: Seq
    lat: Lat
    lon: Lon
    heading: Annotated[float, msgspec.Meta(ge=0.0, lt=360.0)] = 0.0
    speed: Annotated[float, msgspec.Meta(ge=0.0, le=100.0, description="metres per second")] = 0.0
    status: DriverStatus = "available"
    offers: bool = False  # the driver answers ride offers (accept/decline); without it matching assigns directly


class RideRequested(Event, tag="ride.requested", frozen=True, kw_only=True):
    """A rider asked for a ride (published by the gateway's outbox). Key: ride_id."""

    ride_id: Id
    rider_id: Id
    pickup: LatLon
    dropoff: LatLon
    surge_multiplier: Multiplier | None = None
    quote_id: Id | None = None


class RideOffered(Event, tag="ride.offered", frozen=True, kw_only=True):
    """Matching holds ``driver_id`` for the ride and asks it to accept before ``expires_ts``.
    The offer's id is this event's ``event_id``; answers must quote it."""

    ride_id: Id
    rider_id: Id | None = None
    driver_id: Id
    pickup: LatLon
    dropoff: LatLon
    eta_s: Seconds = 0.0
    attempt: Attempt = 1
    expires_ts: Annotated[
        int, msgspec.Meta(ge=0, le=MAX_TS_MS, description="epoch ms: no answer by then moves the offer on")
    ]


class RideOfferAnswered(Event, tag="ride.offer_answered", frozen=True, kw_only=True):
    """The driver's answer to one offer (published by the driver, i.e. the simulator)."""

    ride_id: Id
    driver_id: Id
    offer_id: Id
    accepted: bool
    reason: Text = ""


class RideOfferTimedOut(Event, tag="ride.offer_timed_out", frozen=True, kw_only=True):
    """Matching withdrew an unanswered offer (no answer in time, or the driver went silent); the
    driver is free again and the ride moves on."""

    ride_id: Id
    driver_id: Id
    offer_id: Id
    attempt: Attempt = 1
    reason: Text = ""  # why it was withdrawn, e.g. "no answer within 5 s" or "driver went silent"


class RideAssigned(Event, tag="ride.assigned", frozen=True, kw_only=True):
    ride_id: Id
    rider_id: Id | None = None
    driver_id: Id
    pickup: LatLon
    dropoff: LatLon
    eta_s: Seconds = 0.0
    surge_multiplier: Multiplier | None = None


class RideArrived(Event, tag="ride.arrived", frozen=True, kw_only=True):
    ride_id: Id
    rider_id: Id | None = None
    driver_id: Id


class RidePickedUp(Event, tag="ride.picked_up", frozen=True, kw_only=True):
    ride_id: Id
    rider_id: Id | None = None
    driver_id: Id


class RideCompleted(Event, tag="ride.completed", frozen=True, kw_only=True):
    ride_id: Id
    rider_id: Id | None = None
    driver_id: Id
    distance_m: Metres = 0.0
    duration_s: Seconds = 0.0
    fare: Fare | None = None
    surge_multiplier: Multiplier | None = None


class RideCancelled(Event, tag="ride.cancelled", frozen=True, kw_only=True):
    ride_id: Id
    rider_id: Id | None = None
    by: Literal["rider", "driver", "system"]
    reason: Text = ""
    driver_id: Id | None = None


class RideExpired(Event, tag="ride.expired", frozen=True, kw_only=True):
    ride_id: Id
    rider_id: Id | None = None
    reason: Text


class SurgeChanged(Event, tag="pricing.surge", frozen=True, kw_only=True):
    """A cell's surge multiplier changed (published by pricing). Key: the H3 cell."""

    cell: Annotated[str, msgspec.Meta(min_length=1, max_length=16, description="H3 cell index (hex)")]
    resolution: Annotated[int, msgspec.Meta(ge=0, le=15)]
    multiplier: Multiplier
    previous: Multiplier = 1.0
    demand: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT, description="ride requests in the window")] = 0
    supply: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT, description="available drivers in the window")] = 0


RideLifecycleEvent = (
    RideOffered
    | RideOfferAnswered
    | RideOfferTimedOut
    | RideAssigned
    | RideArrived
    | RidePickedUp
    | RideCompleted
    | RideCancelled
    | RideExpired
)
AnyEvent = DriverLocation | RideRequested | RideLifecycleEvent

ALL_EVENT_TYPES: tuple[type[Event], ...] = (
    DriverLocation,
    RideRequested,
    RideOffered,
    RideOfferAnswered,
    RideOfferTimedOut,
    RideAssigned,
    RideArrived,
    RidePickedUp,
    RideCompleted,
    RideCancelled,
    RideExpired,
    SurgeChanged,
)

_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder(AnyEvent)


class _VersionProbe(msgspec.Struct):
    v: int = SCHEMA_VERSION
    type: str = ""


_probe_decoder = msgspec.json.Decoder(_VersionProbe)
_version = operator.attrgetter("v")


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def event_type(cls: type[Event]) -> str:
    return str(cls.__struct_config__.tag)


class EventDecoder:
    """Decodes bytes into one of the given event types, or raises :class:`EventError`."""

    def __init__(self, *types: type[Event]) -> None:
        self._types = types or ALL_EVENT_TYPES
        union = self._types[0]
        for t in self._types[1:]:
            union = union | t  # type: ignore[assignment]
        self._decoder = msgspec.json.Decoder(union)
        self._names = {event_type(t) for t in self._types}

    def decode(self, data: bytes | None) -> Event:
        if not data:
            raise EventError("empty message")
        if b"\\u0000" in data:  # Postgres text and jsonb refuse NUL; no id or reason needs one
            raise EventError("NUL character (\\u0000) in a string field")
        try:
            event = self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise EventError(self._explain(data, exc)) from None
        if event.v != SCHEMA_VERSION:
            raise EventError(f"unsupported schema version v={event.v} for {event_type(type(event))}")
        return event

    def decode_many(self, values: list[bytes]) -> list[Event] | None:
        """Decode a whole batch in one pass (``map`` over msgspec's decoder: no Python frame per
        message), or return None if any value would not decode exactly as :meth:`decode` accepts
        it (empty, a NUL, not an event, another version); the caller then decodes one by one to
        learn which and why. The joined NUL test can only err towards the slow path (an escape
        split across two values), never let a NUL through."""
        if not values or b"" in values or b"\\u0000" in b"".join(values):
            return None
        try:
            events: list[Event] = list(map(self._decoder.decode, values))
        except msgspec.DecodeError:
            return None
        versions = set(map(_version, events))
        if versions != {SCHEMA_VERSION}:
            return None
        return events

    def _explain(self, data: bytes, exc: msgspec.DecodeError) -> str:
        try:
            probe = _probe_decoder.decode(data)
        except msgspec.DecodeError:
            return f"malformed JSON: {exc}"
        if probe.type and probe.type not in self._names:
            return f"unexpected event type {probe.type!r} (expected one of {sorted(self._names)})"
        if probe.v != SCHEMA_VERSION:
            return f"unsupported schema version v={probe.v}"
        return f"invalid event: {exc}"


def decode_any(data: bytes) -> AnyEvent:
    return _any_decoder.decode(data)


def json_schemas() -> dict[str, dict[str, object]]:
    """JSON Schema of each event type, keyed by ``<type>.v<version>``."""
    out: dict[str, dict[str, object]] = {}
    for cls in ALL_EVENT_TYPES:
        schema = msgspec.json.schema(cls)
        out[f"{event_type(cls)}.v{SCHEMA_VERSION}"] = schema
    return out
