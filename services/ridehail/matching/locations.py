"""The location-ping path of matching: the consumer's fetch settings and the batch handler's
coalescing (newest ping per driver, what cannot be stored dead-lettered with the reason).

Fetch settings (librdkafka 2.16 against the embedded broker, a backlog of 600k pings, consumer
alone: ``consumer_probe`` in ``docs/bench/matching-ingest-runs.json``): with the defaults the client stops
fetching a partition whenever its local queue holds ``queued.min.messages`` (100k) and waits
``fetch.queue.backoff.ms`` (1 s) before asking again, so a consumer that drains fast idles on a
refilling queue: 93-165k msg/s. A deeper queue (still capped by
``queued.max.messages.kbytes``, 64 MiB) and a short back-off: 329-344k msg/s.
"""

from __future__ import annotations

import gc
from typing import Any

from ridehail.common.batch_consumer import Decoded, Rejected
from ridehail.domain.events import DriverLocation, event_type
from ridehail.domain.geo import SERVICE_AREA
from ridehail.matching.validation import BIGINT_MAX, unstorable

LOCATION_FETCH: dict[str, Any] = {
    "queued.min.messages": 1_000_000,
    "fetch.queue.backoff.ms": 10,
    # An empty fetch is held this long by the broker. The embedded broker pays ~1.5 ms of CPU per
    # fetch whether or not it returns data (docs/performance.md), and a driver row 200 ms staler
    # changes no assignment (pings come once a second); under load fetches return data at once.
    "fetch.wait.max.ms": 200,
}

# The collector's first-generation threshold (CPython's default: 700 allocations). A batch of
# 20k pings allocates ~80k tracked objects (librdkafka messages, decoded structs, wrappers) that
# all live until the batch is written: with the default the collector ran ~100 times per batch
# and walked the survivors again and again (py-spy --native: gc_collect_main 11.6 % of matching's
# samples at 60k pings/s).
GC_GEN0_THRESHOLD = 100_000


def tune_collector() -> None:
    """Freeze what start-up built (imports, settings, pools: never garbage) and collect the
    young generation per ~batch instead of per 700 allocations. Process-wide: call once, in the
    matching process, after start-up."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def coalesce(batch: list[Decoded]) -> tuple[list[DriverLocation], list[Rejected]]:
    """The newest ping per driver in ``batch``, and what is rejected with its reason: an event
    Postgres could not store (:func:`~ridehail.matching.validation.unstorable`), another event
    type, a position outside the service area, a seq lower than an earlier one of the same driver
    in the batch (same partition: a producer bug). The checks are those of one ping at a time;
    the loop only skips the full ``unstorable`` test for pings that plainly pass it (a
    ``DriverLocation`` with int ``seq``/``ts`` in range, no NUL anywhere in the batch's bytes)."""
    rejected: list[Rejected] = []
    newest: dict[str, DriverLocation] = {}
    get = newest.get
    raws = [raw for raw in map(_value, batch) if raw]
    nul_somewhere = b"\\u0000" in b"".join(raws)
    area = SERVICE_AREA
    min_lat, max_lat, min_lon, max_lon = area.min_lat, area.max_lat, area.min_lon, area.max_lon
    for item in batch:
        ping = item.event
        if (
            nul_somewhere
            or type(ping) is not DriverLocation
            or type(ping.seq) is not int
            or type(ping.ts) is not int
            or ping.seq > BIGINT_MAX
            or ping.ts > BIGINT_MAX
        ):
            problem = unstorable(item)
            if problem:
                rejected.append(Rejected(item.message, problem))
                continue
            if not isinstance(ping, DriverLocation):
                rejected.append(Rejected(item.message, f"unexpected event {event_type(type(ping))} on locations"))
                continue
        lat, lon = ping.lat, ping.lon
        if not (min_lat <= lat <= max_lat and min_lon <= lon <= max_lon):
            rejected.append(Rejected(item.message, f"position outside the service area: {lat},{lon}"))
            continue
        previous = get(ping.driver_id)
        if previous is not None and ping.seq < previous.seq:
            reason = f"backwards seq for {ping.driver_id}: {ping.seq} after {previous.seq}"
            rejected.append(Rejected(item.message, reason))
            continue
        newest[ping.driver_id] = ping
    return list(newest.values()), rejected


def _value(item: Decoded) -> bytes | None:
    return item.message.value()
