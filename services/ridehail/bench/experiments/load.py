"""Load generation: pings made on a schedule (open loop: a ping's clock starts when it was due,
not when the client got round to sending it, so a slow server cannot hide its queueing) and sent
either straight to the broker or as HTTP POSTs through the simulator's REST sender."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message

from ridehail.common.kafka import EventProducer
from ridehail.domain.events import DriverLocation, encode, now_ms
from ridehail.domain.geo import SERVICE_AREA
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.simulator.transport import Outcome, RestPingSender


class PingMaker:
    """Pings of ``drivers`` drivers in turn (driver k % n, seq k // n + 1); with ``unique`` every
    ping is the only ping of its own driver id, so each one lands in its own row and can be counted."""

    def __init__(self, prefix: str, drivers: int, seed: int = 7, unique: bool = False) -> None:
        self.prefix = prefix
        self.drivers = max(1, drivers)
        self.unique = unique
        rng = np.random.default_rng(seed)
        a = SERVICE_AREA
        self._lat = rng.uniform(a.min_lat + 0.01, a.max_lat - 0.01, self.drivers).tolist()
        self._lon = rng.uniform(a.min_lon + 0.01, a.max_lon - 0.01, self.drivers).tolist()

    def driver_id(self, k: int) -> str:
        return f"{self.prefix}{k:08d}" if self.unique else f"{self.prefix}{k % self.drivers:06d}"

    def make(self, k: int) -> DriverLocation:
        i = k % self.drivers
        seq = 1 if self.unique else k // self.drivers + 1
        drift = (seq % 100) * 1e-5
        return DriverLocation(
            driver_id=self.driver_id(k),
            seq=seq,
            lat=self._lat[i] + drift,
            lon=self._lon[i] + drift,
            heading=90.0,
            speed=8.0,
            ts=now_ms(),
        )


async def paced(rate: float, emit: Callable[[int, float], None], stop: asyncio.Event, start_k: int = 0) -> int:
    """Call ``emit(k, due)`` for item k as soon as its due time ``start + k / rate`` has come (not
    one interval later: at a few per second that interval would be most of a latency), until
    ``stop``; returns the number emitted."""
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        due_count = int(rate * (time.monotonic() - start)) + 1  # items whose due time has come
        while k < due_count:
            emit(start_k + k, start + k / rate)
            k += 1
        await asyncio.sleep(min(0.005, max(0.0, start + k / rate - time.monotonic())))
    return k


@dataclass
class PathRecorder:
    """Outcomes and latencies of one load path (thread-safe enough: appends under the GIL)."""

    window_start: float = 0.0
    window_end: float = float("inf")
    window_accepted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds, accepted pings in the window
    accepted_tags: set[Any] = field(default_factory=set)
    keep_tags: bool = False
    longest_no_accept_s: float = 0.0  # the longest stretch without any accepted ping (a full stall)
    _last_accept_at: float | None = None

    def record(self, tag: Any, outcome: str, latency_s: float, created: float) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == "accepted":
            now = time.monotonic()
            if self._last_accept_at is not None:
                self.longest_no_accept_s = max(self.longest_no_accept_s, now - self._last_accept_at)
            self._last_accept_at = now
            if self.window_start <= created < self.window_end:
                self.latencies.append(latency_s)
                self.window_accepted += 1
            if self.keep_tags:
                self.accepted_tags.add(tag)

    def count(self, outcome: str) -> int:
        return self.outcomes.get(outcome, 0)


class KafkaPathLoad:
    """The ``kafka`` path: the device produces to the broker itself (idempotent, acks=all)."""

    def __init__(self, bootstrap: str, maker: PingMaker, recorder: PathRecorder, client_id: str) -> None:
        self.producer = EventProducer(bootstrap, client_id)
        self.undelivered_at_close = 0
        self.refused_reason = ""
        self.maker = maker
        self.recorder = recorder
        self.topic = DRIVER_LOCATION.name

    def emit(self, k: int, due: float) -> None:
        ping = self.maker.make(k)
        rec = self.recorder
        tag = ping.driver_id if rec.keep_tags else None

        def report(err: KafkaError | None, _: Message, tag: Any = tag, due: float = due) -> None:
            if err is None:
                rec.record(tag, "accepted", time.monotonic() - due, due)
            else:
                rec.record(tag, "failed", 0.0, due)

        try:
            self.producer.produce(self.topic, encode(ping), ping.driver_id, on_delivery=report)
        except KafkaException as exc:  # e.g. _FATAL before the producer was recreated
            rec.record(tag, "refused", 0.0, due)
            self.refused_reason = exc.args[0].str()

    @property
    def backlog(self) -> int:
        return self.producer.pending()

    async def finish(self, timeout_s: float) -> None:
        self.undelivered_at_close = await asyncio.to_thread(self.producer.close, timeout_s)


class HttpPathLoad:
    """The REST paths: POST each ping to the ingest edge (keep-alive pool, optional retries)."""

    def __init__(
        self,
        url: str,
        maker: PingMaker,
        recorder: PathRecorder,
        *,
        connections: int,
        retry_s: float,
        max_queue_wait_s: float | None,
        token_for: Callable[[str], str],
    ) -> None:
        self.maker = maker
        self.recorder = recorder
        self.token_for = token_for  # each driver posts with its own access token, as the edge requires
        self._due: dict[Any, float] = {}
        self.sender = RestPingSender(
            url,
            concurrency=connections,
            retry_s=retry_s,
            max_queue_wait_s=max_queue_wait_s,
            on_result=self._on_result,
        )
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.sender.run(self.stop, drain_s=retry_s + 2.0))

    def _on_result(self, tag: Any, outcome: Outcome, latency_s: float) -> None:
        driver_id, due = tag
        self.recorder.record(driver_id, outcome, latency_s, due)

    def emit(self, k: int, due: float) -> None:
        ping = self.maker.make(k)
        self.sender.submit(encode(ping), (ping.driver_id, due), created=due, token=self.token_for(ping.driver_id))

    @property
    def backlog(self) -> int:
        return self.sender.backlog

    async def finish(self, timeout_s: float) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, timeout=timeout_s + 5)
        except TimeoutError:  # a starved loop: what is still queued counts as not delivered
            self.task.cancel()


def percentile_ms(values: array[float] | list[float], q: float) -> float | None:
    if len(values) == 0:
        return None
    data = np.frombuffer(values, dtype="d") if isinstance(values, array) else np.asarray(values)
    return round(float(np.percentile(data, q)) * 1000, 2)
