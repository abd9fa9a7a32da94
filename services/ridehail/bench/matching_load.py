"""The load generator of ``ridehail bench matching``'s ingest phase: real ``DriverLocation`` pings
(the event contract, encoded before the clock starts) produced at a paced rate by a bare
confluent-kafka client with the project's delivery settings (:func:`ridehail.common.kafka.producer_config`:
``acks=all``, idempotent, lz4) through the benchmark's broker.

Why not :class:`ridehail.common.kafka.EventProducer`: it makes a delivery-report closure per
message and takes a lock per ``produce`` (it must re-produce what a replaced client held); at
100k pings/s those Python calls were most of the generator's time (py-spy: ``_wrap``,
``_poll_loop`` and ``produce`` ~60 % of its samples at 46k/s). Here delivery reports come only for
failures (``delivery.report.only.error``), counted by one config-level callback, and the client is
polled every few thousand messages. The pacing loop runs in a thread so that the event loop (the
lag sampler) is not starved.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from ridehail.bench.matching_support import random_points
from ridehail.common.kafka import producer_config
from ridehail.domain.events import DriverLocation, DriverStatus, encode
from ridehail.domain.topics import DRIVER_LOCATION

# Bigger batches than the services' producers (they favour latency): fewer requests for the broker,
# better lz4 ratios. Still acks=all + idempotence from producer_config.
LOAD_OVERRIDES: dict[str, Any] = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "delivery.report.only.error": True,
}
POLL_EVERY = 5000  # messages between two poll(0) calls (serves error reports, frees the queue)
CHUNKS_PER_ROUND = 20  # pacing granularity: one sleep per 1/20 of a round


def encode_rounds(
    prefix: str, drivers: int, rounds: int, seed: int, status: DriverStatus = "available"
) -> list[list[bytes]]:
    """``rounds`` pings of each of ``drivers`` drivers (seq 1..rounds), encoded; list per round."""
    rng = np.random.default_rng(seed)
    home = random_points(rng, drivers)
    lats = home[:, 0].tolist()
    lons = home[:, 1].tolist()
    return [
        [
            encode(
                DriverLocation(driver_id=f"{prefix}{i}", seq=seq, lat=lats[i] + seq * 1e-6, lon=lons[i], status=status)
            )
            for i in range(drivers)
        ]
        for seq in range(1, rounds + 1)
    ]


@dataclass
class PingLoad:
    """Produces pre-encoded rounds of pings at ``rate`` per second in a background thread."""

    bootstrap: str
    prefix: str
    payloads: list[list[bytes]]
    rate: float
    client_id: str = "bench-ingest"
    failed: int = 0
    first_error: str | None = None
    produced_s: float | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)
    _started: threading.Event = field(default_factory=threading.Event, repr=False)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err.str()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-ping-load", daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        conf = producer_config(self.bootstrap, self.client_id, on_delivery=self._on_delivery, **LOAD_OVERRIDES)
        producer = Producer(conf)
        try:
            self._produce(producer)
        finally:
            self._started.set()
            left = producer.flush(120)
            if left:
                self.failed += left
                self.first_error = self.first_error or f"{left} pings not delivered within 120 s"

    def _produce(self, producer: Producer) -> None:
        topic = DRIVER_LOCATION.name
        drivers = len(self.payloads[0]) if self.payloads else 0
        keys = [f"{self.prefix}{i}".encode() for i in range(drivers)]
        chunk = max(1, drivers // CHUNKS_PER_ROUND)
        produce, poll = producer.produce, producer.poll
        sent = 0
        started = time.perf_counter()
        self._started.set()
        for r, round_payloads in enumerate(self.payloads):
            for c in range(0, drivers, chunk):
                for i in range(c, min(c + chunk, drivers)):
                    while True:
                        try:
                            produce(topic, round_payloads[i], keys[i])
                            break
                        except BufferError:  # the local queue is full: let deliveries drain it
                            poll(0.01)
                sent += min(chunk, drivers - c)
                if sent >= POLL_EVERY:
                    poll(0)
                    sent = 0
                due = started + (r * drivers + c + chunk) / self.rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
        self.produced_s = time.perf_counter() - started

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float = 600) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError("the ping load did not finish")
        if self.failed:
            raise RuntimeError(f"{self.failed} pings not delivered: {self.first_error}")
