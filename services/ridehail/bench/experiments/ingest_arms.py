"""The arms of ``ridehail bench ingest`` and their open-loop load generators.

Every arm gets the same pings on the same schedule: ping ``k`` is due at ``start + k / rate``,
belongs to driver ``k % drivers`` and carries seq ``base + k // drivers + 1`` (``base`` grows run by
run, so a run's pings are always newer than the previous run's). Each generator writes the
outcome of ping ``k`` into a :class:`Ledger`: acknowledged (with its latency from the moment it
was due, so queueing in the client counts), failed (an error answer), or nothing (unanswered
within the budget: request time-out = the Kafka producer's ``message.timeout.ms``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ridehail.common.kafka import producer_config
from ridehail.domain.events import DriverLocation, encode, now_ms
from ridehail.domain.geo import SERVICE_AREA
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.simulator.httpclient import HttpPingClient, HttpTransportError


@dataclass(frozen=True)
class Arm:
    """One way of getting pings into Postgres. ``edge``: the ingest edge's settings (None: no
    edge); ``uses``: the server components whose CPU this arm is charged."""

    name: str
    meaning: str
    edge: dict[str, str] | None
    uses: tuple[str, ...]


_KAFKA_USES = ("broker", "matching", "postgres")
ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm(
            "kafka",
            "devices -> broker, ONE shared producer batching across all devices (linger 5 ms)",
            None,
            _KAFKA_USES,
        ),
        Arm(
            "kafka-per-device",
            "devices -> broker, one producer per simulated device, linger.ms=0, batch.num.messages=1",
            None,
            _KAFKA_USES,
        ),
        Arm("rest", "one POST /ingest/ping per ping, one upsert per request", {"RIDEHAIL_INGEST_MODE": "rest"}, ()),
        Arm(
            "rest-batch",
            "a trusted aggregator POSTs many devices' pings per request (/ingest/pings), one upsert per request",
            {"RIDEHAIL_INGEST_MODE": "rest"},
            (),
        ),
        Arm(
            "rest-group-commit",
            "one POST per ping; the edge writes the pings of a short window in one upsert",
            {"RIDEHAIL_INGEST_MODE": "rest"},  # + RIDEHAIL_INGEST_GROUP_COMMIT_MS from the options
            (),
        ),
        Arm(
            "rest-2-workers",
            "one POST per ping, two edge processes on the port",
            {"RIDEHAIL_INGEST_MODE": "rest", "RIDEHAIL_INGEST_WORKERS": "2"},
            (),
        ),
        Arm(
            "rest-kafka",
            "one POST per ping; the edge produces it and answers after the broker's ack",
            {"RIDEHAIL_INGEST_MODE": "rest-kafka", "RIDEHAIL_INGEST_ACK": "broker"},
            _KAFKA_USES,
        ),
        Arm(
            "rest-kafka-enqueue",
            "as rest-kafka, answered once queued in the edge's producer (not acked yet)",
            {"RIDEHAIL_INGEST_MODE": "rest-kafka", "RIDEHAIL_INGEST_ACK": "enqueue"},
            _KAFKA_USES,
        ),
    )
}
DEFAULT_ARMS = (
    "kafka",
    "kafka-per-device",
    "rest",
    "rest-batch",
    "rest-group-commit",
    "rest-2-workers",
    "rest-kafka",
)
REST_ARMS = {name for name, arm in ARMS.items() if arm.edge is not None}


def arm_components(arm: Arm) -> tuple[str, ...]:
    """The server components an arm uses (its own edge included): the CPU it is charged."""
    if arm.edge is None:
        return arm.uses
    return (f"ingest[{arm.name}]", *(arm.uses or ("postgres",)))


def connections_for(rate: float, latency_s: float, lo: int = 8, hi: int = 1024) -> int:
    """HTTP connections for an open loop: offered rate x expected latency (Little's law), bounded."""
    return max(lo, min(hi, math.ceil(rate * latency_s)))


UNANSWERED, ACKED, FAILED = 0, 1, 2


class Ledger:
    """The outcome of every ping of a run, indexed by ``k``."""

    def __init__(self, rate: float, total: int, start: float) -> None:
        self.rate = rate
        self.start = start
        self.state = np.zeros(total, dtype=np.int8)
        self.latency = np.full(total, np.nan)
        self.produced = 0
        self.errors: dict[str, int] = {}

    def due(self, k: int) -> float:
        return self.start + k / self.rate

    def ack(self, k: int, now: float) -> None:
        self.state[k] = ACKED
        self.latency[k] = now - self.due(k)

    def fail(self, k: int, why: str) -> None:
        self.state[k] = FAILED
        self.errors[why] = self.errors.get(why, 0) + 1


class Pings:
    """Ping ``k`` of a run (see the module docstring)."""

    def __init__(self, prefix: str, drivers: int, seed: int = 7) -> None:
        self.drivers = drivers
        self.ids = [f"{prefix}{i:06d}" for i in range(drivers)]
        rng = np.random.default_rng(seed)
        a = SERVICE_AREA
        self.lat = rng.uniform(a.min_lat + 0.01, a.max_lat - 0.01, drivers).tolist()
        self.lon = rng.uniform(a.min_lon + 0.01, a.max_lon - 0.01, drivers).tolist()
        self.base = 0

    def driver(self, k: int) -> str:
        return self.ids[k % self.drivers]

    def make(self, k: int) -> DriverLocation:
        i = k % self.drivers
        seq = self.base + k // self.drivers + 1
        drift = (seq % 100) * 1e-5
        return DriverLocation(
            driver_id=self.ids[i], seq=seq, lat=self.lat[i] + drift, lon=self.lon[i] + drift, speed=8.0, ts=now_ms()
        )

    def malformed(self, i: int, in_array: bool = False) -> bytes:
        """Half broken (JSON that does not parse; in an array: a ping without position and a
        negative seq), half valid JSON outside the service area."""
        if i % 2 == 0:
            if in_array:
                return b'{"type":"driver.location","driver_id":"' + self.ids[i].encode() + b'","seq":-1}'
            return b'{"type":"driver.location","driver_id":"' + self.ids[i].encode() + b'","seq":'
        p = self.make(i)
        return encode(DriverLocation(driver_id=p.driver_id, seq=p.seq, lat=59.33, lon=18.07, ts=p.ts))


class KafkaLoad:
    """``kafka``: one shared producer (the project's producer config: acks=all, idempotent, lz4,
    linger 5 ms, batches up to 10,000) for every device;
    ``kafka-per-device``: ``devices`` producers, device ``d`` sending through producer ``d % n``
    with ``linger.ms=0`` and ``batch.num.messages=1`` (each record its own produce request: no
    batching across devices). Delivery reports of all of them are served by one poll thread."""

    def __init__(self, bootstrap: str, pings: Pings, ledger: Ledger, budget_s: float, devices: int) -> None:
        self.pings = pings
        self.ledger = ledger
        timeout = {"message.timeout.ms": int(budget_s * 1000)}
        if devices <= 0:  # the shared producer: the project's defaults (linger 5 ms, batches of 10,000)
            self.producers = [Producer(producer_config(bootstrap, "bench-shared", **timeout))]
        else:
            conf = producer_config(bootstrap, "bench-device", **timeout, **{"linger.ms": 0, "batch.num.messages": 1})
            self.producers = [Producer({**conf, "client.id": f"bench-device-{d}"}) for d in range(devices)]
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="bench-kafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while self._running:
            for p in self.producers:
                p.poll(0)
            time.sleep(0.002)

    def emit(self, k: int, _due: float) -> None:
        ping = self.pings.make(k)
        ledger = self.ledger

        def report(err: KafkaError | None, _: Message, k: int = k) -> None:
            if err is None:
                ledger.ack(k, time.monotonic())
            else:
                ledger.fail(k, f"delivery: {err.name()}")

        ledger.produced = k + 1
        producer = self.producers[(k % self.pings.drivers) % len(self.producers)]
        try:
            producer.produce(DRIVER_LOCATION.name, encode(ping), ping.driver_id, on_delivery=report)
        except (BufferError, KafkaException) as exc:  # queue full, fatal producer: a refused ping
            ledger.fail(k, f"produce: {type(exc).__name__}")

    def send_malformed(self, n: int) -> int:
        for i in range(n):
            self.producers[0].produce(DRIVER_LOCATION.name, self.pings.malformed(i), f"malformed-{i}")
        return 0  # refused downstream (dead letters), counted by the caller

    async def finish(self, budget_s: float) -> None:
        def close() -> None:
            deadline = time.monotonic() + budget_s + 1
            for p in self.producers:
                p.flush(max(0.1, deadline - time.monotonic()))

        await asyncio.to_thread(close)
        self._running = False


class HttpLoad:
    """The REST arms: an open loop of ``connections`` keep-alive connections (one request in
    flight each). ``batch_size`` > 1: pings of many devices are collected for up to ``linger_s``
    (or ``batch_size`` pings) and POSTed together with ``batch_token`` (an aggregator)."""

    def __init__(
        self,
        url: str,
        pings: Pings,
        ledger: Ledger,
        *,
        connections: int,
        budget_s: float,
        token_for: Callable[[str], str],
        batch_size: int = 1,
        linger_s: float = 0.01,
        batch_token: str = "",
    ) -> None:
        self.pings = pings
        self.ledger = ledger
        self.budget_s = budget_s
        self.token_for = token_for
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.batch_token = batch_token
        self.client = HttpPingClient(url, connections=connections, timeout_s=budget_s)
        self.queue: asyncio.Queue[list[int]] = asyncio.Queue()
        self._buf: list[int] = []
        self.expired_in_client = 0
        self.rejected = 0
        self.last_error = ""
        self.workers = [asyncio.create_task(self._worker()) for _ in range(connections)]
        self.flusher = asyncio.create_task(self._linger()) if batch_size > 1 else None

    def emit(self, k: int, _due: float) -> None:
        self.ledger.produced = k + 1
        if self.batch_size <= 1:
            self.queue.put_nowait([k])
            return
        self._buf.append(k)
        if len(self._buf) >= self.batch_size:
            self.queue.put_nowait(self._buf)
            self._buf = []

    async def _linger(self) -> None:
        while True:
            await asyncio.sleep(self.linger_s)
            if self._buf:
                self.queue.put_nowait(self._buf)
                self._buf = []

    async def _worker(self) -> None:
        ledger = self.ledger
        while True:
            ks = await self.queue.get()
            now = time.monotonic()
            live = [k for k in ks if now - ledger.due(k) < self.budget_s]
            self.expired_in_client += len(ks) - len(live)
            if not live:
                continue
            if self.batch_size <= 1:
                ping = self.pings.make(live[0])
                body, token = encode(ping), self.token_for(ping.driver_id)
            else:
                body = b"[" + b",".join(encode(self.pings.make(k)) for k in live) + b"]"
                token = self.batch_token
            try:
                answer = await self.client.post(body, token)
            except HttpTransportError as exc:
                self.last_error = str(exc)[:200]
                if "timeout" not in str(exc):
                    for k in live:
                        ledger.fail(k, "connection")
                continue  # no answer within the budget: unanswered
            done = time.monotonic()
            if 200 <= answer.status < 300:
                if self.batch_size <= 1:
                    ledger.ack(live[0], done)
                    continue
                try:
                    items = [item["status"] for item in orjson.loads(answer.body)["results"]]
                except (ValueError, KeyError, TypeError):
                    items = []
                if len(items) != len(live):  # an answer that does not say what became of each ping
                    for k in live:
                        ledger.fail(k, "unreadable batch answer")
                    continue
                for k, status in zip(live, items, strict=True):
                    if status == "rejected":
                        ledger.fail(k, "rejected item")
                    else:
                        ledger.ack(k, done)
            else:
                self.last_error = f"{answer.status} {answer.body[:200].decode(errors='replace')}"
                for k in live:
                    ledger.fail(k, f"http {answer.status}")

    async def send_malformed(self, n: int) -> int:
        """Bad pings the edge must refuse (400/422, or ``rejected`` items of one batch)."""
        bodies = [self.pings.malformed(i, in_array=self.batch_size > 1) for i in range(n)]
        refused = 0
        if self.batch_size > 1:
            answer = await self.client.post(b"[" + b",".join(bodies) + b"]", self.batch_token)
            if answer.status == 200:
                refused = sum(1 for x in orjson.loads(answer.body)["results"] if x["status"] == "rejected")
            return refused
        for i, body in enumerate(bodies):
            answer = await self.client.post(body, self.token_for(self.pings.ids[i]))
            refused += 1 if answer.status in (400, 422) else 0
        return refused

    @property
    def backlog(self) -> int:
        return self.queue.qsize() + len(self._buf)

    async def finish(self, budget_s: float) -> None:
        """Wait for what is queued or in flight (at most one budget), then stop."""
        if self._buf:
            self.queue.put_nowait(self._buf)
            self._buf = []
        deadline = time.monotonic() + budget_s + 0.5
        while time.monotonic() < deadline and (self.queue.qsize() or self._busy()):
            await asyncio.sleep(0.05)
        for task in [*self.workers, *([self.flusher] if self.flusher else [])]:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.client.close()

    def _busy(self) -> bool:
        return self.client._free.qsize() < self.client.connections
