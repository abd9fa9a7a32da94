"""The location path's batch shortcuts give exactly what one message at a time gives: the
consumer's one-pass decode (``EventDecoder.decode_many``, ``BatchConsumer._decode``) and the
handler's coalescing (``ridehail.matching.locations.coalesce``)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from ridehail.common.batch_consumer import BatchConsumer, Decoded, Rejected
from ridehail.domain.events import DriverLocation, EventDecoder, EventError, RideCancelled, encode
from ridehail.matching.locations import coalesce
from ridehail.matching.validation import unstorable


def ping(driver: str, seq: int, lat: float = 57.7, lon: float = 11.97) -> DriverLocation:
    return DriverLocation(driver_id=driver, seq=seq, lat=lat, lon=lon)


def message(value: bytes | None, offset: int = 0) -> Message:
    return Message(topic="ridehail.driver.location.v1", partition=0, offset=offset, value=value)


def consumer() -> BatchConsumer:
    async def handler(_: list[Decoded]) -> list[Rejected]:
        return []

    # No client is created before run(): the decode step needs none.
    return BatchConsumer(
        bootstrap="127.0.0.1:1",
        group_id="g",
        topics=["ridehail.driver.location.v1"],
        decoder=EventDecoder(DriverLocation),
        handler=handler,
        dlq_producer=None,  # type: ignore[arg-type]
        name="test",
        max_message_bytes=1000,
    )


BAD_VALUES = [
    b"",
    b"{not json",
    b'{"type":"driver.location","v":2,"event_id":"e","ts":1,"driver_id":"d","seq":1,"lat":57.7,"lon":11.9}',
    encode(ping("nul\u0000", 1)),
    encode(RideCancelled(ride_id="r", by="rider", reason="x")),
    encode(ping("d", 1))[:-1] + b',"pad":"' + b"x" * 1200 + b'"}',  # too large
    encode(ping("a", 1)) + b"," + encode(ping("b", 1)),  # two events in one message
]


def test_decode_many_equals_one_by_one_for_good_batches() -> None:
    decoder = EventDecoder(DriverLocation)
    values = [encode(ping(f"d{i}", i)) for i in range(50)]
    assert decoder.decode_many(values) == [decoder.decode(v) for v in values]


def test_decode_many_refuses_any_batch_with_one_bad_value() -> None:
    decoder = EventDecoder(DriverLocation)
    good = [encode(ping(f"d{i}", i)) for i in range(5)]
    for bad in BAD_VALUES[:5] + BAD_VALUES[6:]:
        assert decoder.decode_many([*good, bad, *good]) is None, bad[:60]
    assert decoder.decode_many([]) is None


def test_batch_decode_gives_what_one_by_one_gives() -> None:
    c = consumer()
    decoder = EventDecoder(DriverLocation)
    for bad in BAD_VALUES:
        values = [encode(ping("a", 1)), bad, encode(ping("b", 2))]
        good, rejected = c._decode([message(v, i) for i, v in enumerate(values)])
        assert [d.event for d in good] == [decoder.decode(values[0]), decoder.decode(values[2])]
        assert len(rejected) == 1 and rejected[0].message.value() == bad
        if len(bad) <= 1000:
            try:
                decoder.decode(bad)
            except EventError as exc:
                assert rejected[0].reason == exc.reason
        else:
            assert rejected[0].reason.startswith("message too large")
    good, rejected = c._decode([message(encode(ping("a", i)), i) for i in range(10)])
    assert [d.event.seq for d in good] == list(range(10)) and rejected == []  # type: ignore[attr-defined]


def reference(batch: list[Decoded]) -> tuple[list[DriverLocation], list[tuple[Any, str]]]:
    """The handler's loop as it was before the fast path, one check after the other."""
    from ridehail.domain.events import event_type
    from ridehail.domain.geo import SERVICE_AREA

    rejected: list[tuple[Any, str]] = []
    newest: dict[str, DriverLocation] = {}
    for item in batch:
        p = item.event
        problem = unstorable(item)
        if problem:
            rejected.append((item.message.offset(), problem))
            continue
        if not isinstance(p, DriverLocation):
            rejected.append((item.message.offset(), f"unexpected event {event_type(type(p))} on locations"))
            continue
        if not SERVICE_AREA.contains(p.lat, p.lon):
            rejected.append((item.message.offset(), f"position outside the service area: {p.lat},{p.lon}"))
            continue
        previous = newest.get(p.driver_id)
        if previous is not None and p.seq < previous.seq:
            rejected.append((item.message.offset(), f"backwards seq for {p.driver_id}: {p.seq} after {previous.seq}"))
            continue
        newest[p.driver_id] = p
    return list(newest.values()), rejected


def test_coalesce_equals_the_one_at_a_time_checks() -> None:
    events: list[Any] = [
        ping("a", 1),
        ping("b", 1),
        ping("a", 3),
        ping("a", 2),  # backwards
        ping("c", 1, lat=10.0),  # outside
        RideCancelled(ride_id="r", by="rider", reason="x"),  # another type
        ping("d", 2**63),  # built past the decoder: beyond bigint
        ping("b", 5),
        ping("e", 1),
    ]
    batch = [Decoded(e, message(encode(e), i)) for i, e in enumerate(events)]
    pings, rejected = coalesce(batch)
    want_pings, want_rejected = reference(batch)
    assert pings == want_pings
    assert [(r.message.offset(), r.reason) for r in rejected] == want_rejected
    assert {p.driver_id: p.seq for p in pings} == {"a": 3, "b": 5, "e": 1}
    # a NUL in any message's bytes: every item gets the full check
    nul = DriverLocation(driver_id="n\u0000", seq=1, lat=57.7, lon=11.97)
    batch.append(Decoded(nul, message(encode(nul), 99)))
    pings, rejected = coalesce(batch)
    want_pings, want_rejected = reference(batch)
    assert pings == want_pings and [(r.message.offset(), r.reason) for r in rejected] == want_rejected
