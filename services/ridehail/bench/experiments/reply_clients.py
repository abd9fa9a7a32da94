"""The two callers of ``ridehail bench reply`` and the open-loop window both are driven by.

Both callers get the same treatment: requests due at a fixed rate (a request's clock starts when
it was due), at most ``concurrency`` in flight (a request that cannot get a slot before its
deadline is ``no_slot``), and one deadline ``due + timeout`` after which the caller gives up.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from ridehail.bench.experiments.load import paced
from ridehail.bench.experiments.reply_correlation import (
    HEADER_CORRELATION,
    HEADER_REPLY_TO,
    HEADER_REQUESTER,
    Correlator,
    reply_topic,
    request_topic,
)
from ridehail.common.kafka import EventProducer, consumer_config, message_headers

OK = "ok"


class Caller(Protocol):
    async def call(self, operation: str, payload: dict[str, Any], tag: str, due: float, deadline: float) -> str:
        """Send one request; the outcome (``ok`` or an error kind) once answered or at ``deadline``."""
        ...


class KafkaRequester:
    """Request/reply over Kafka: requests to ``bench.reply.requests.<operation>`` with a
    correlation id header, replies on this requester's own one-partition reply topic, read by a
    consumer thread that stamps each reply's arrival time as it comes off the wire."""

    def __init__(self, bootstrap: str, requester: str) -> None:
        self.requester = requester
        self.reply_topic = reply_topic(requester)
        self.correlator = Correlator()
        self.produce_failures = 0
        self.producer = EventProducer(bootstrap, f"reply-requester-{requester}", **{"linger.ms": 0})
        self.consumer = Consumer(
            consumer_config(
                bootstrap, f"reply-requester-{requester}", f"reply-requester-{requester}", **{"fetch.wait.max.ms": 5}
            )
        )
        self.consumer.assign([TopicPartition(self.reply_topic, 0, 0)])  # the topic is this requester's alone
        self.loop: asyncio.AbstractEventLoop | None = None
        self._running = True
        self._thread = threading.Thread(target=self._read, name="reply-reader", daemon=True)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            arrived = time.monotonic()
            correlation = (dict(message_headers(msg)).get(HEADER_CORRELATION) or b"").decode()
            try:
                body = json.loads(msg.value() or b"{}")
            except ValueError:
                body = {"status": 0}
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self.correlator.reply, correlation, body, arrived)

    async def call(self, operation: str, payload: dict[str, Any], tag: str, due: float, deadline: float) -> str:
        assert self.loop is not None, "start() first"
        correlation = uuid.uuid4().hex
        future: asyncio.Future[Any] = self.loop.create_future()
        self.correlator.open(correlation, tag, due, future)

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.produce_failures += 1

        self.producer.produce(
            request_topic(operation),
            json.dumps(payload).encode(),
            self.requester,
            headers=[
                (HEADER_CORRELATION, correlation.encode()),
                (HEADER_REPLY_TO, self.reply_topic.encode()),
                (HEADER_REQUESTER, self.requester.encode()),
            ],
            on_delivery=report,
        )
        try:
            _arrived, body = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self.correlator.expire(correlation)
            return "timeout"
        status = int(body.get("status", 0))
        return OK if 200 <= status < 300 else f"status_{status}"

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self.consumer.close()
        self.producer.close(5.0)


class RestCaller:
    """The REST caller: ``POST /auth/token`` (password grant, form) on the auth service and
    ``POST /api/rides`` (JSON, Bearer token) on the gateway, over a keep-alive pool of
    ``concurrency`` connections, each request bounded by the same deadline as the Kafka caller's."""

    def __init__(self, base_urls: dict[str, str], concurrency: int) -> None:
        self.base_urls = base_urls
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.AsyncClient(limits=limits, timeout=30.0)

    async def call(self, operation: str, payload: dict[str, Any], tag: str, due: float, deadline: float) -> str:
        del tag, due
        remaining = max(0.001, deadline - time.monotonic())
        base = self.base_urls[operation]
        try:
            # httpx's timeout bounds each phase (connect, write, read); wait_for makes it one deadline
            r = await asyncio.wait_for(self._post(operation, base, payload, remaining), remaining)
        except httpx.ConnectError:
            return "connection_refused"
        except (httpx.TimeoutException, TimeoutError):
            return "timeout"
        except httpx.HTTPError as exc:
            return f"http_error_{type(exc).__name__}"
        return OK if 200 <= r.status_code < 300 else f"status_{r.status_code}"

    async def _post(self, operation: str, base: str, payload: dict[str, Any], timeout: float) -> httpx.Response:
        if operation == "login":
            form = {"grant_type": "password", "username": payload["username"], "password": payload["password"]}
            return await self.client.post(f"{base}/auth/token", data=form, timeout=timeout)
        headers = {"Authorization": f"Bearer {payload['token']}"}
        return await self.client.post(f"{base}/api/rides", json=payload["ride"], headers=headers, timeout=timeout)

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class Window:
    """What one run saw: requests due inside the measured window (after the warm-up)."""

    start: float
    end: float
    sent: int = 0
    answered: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds from due, answered only
    outcomes: dict[str, int] = field(default_factory=dict)
    learned_s: dict[str, list[float]] = field(default_factory=dict)  # error kind -> seconds from due until known
    events: list[tuple[float, str, float]] | None = None  # (due, outcome, settled) of every request, if kept

    @property
    def unanswered(self) -> int:
        return self.sent - self.answered

    def record(self, due: float, outcome: str, settled: float) -> None:
        if self.events is not None:
            self.events.append((due, outcome, settled))
        if not self.start <= due < self.end:
            return
        self.sent += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == OK:
            self.answered += 1
            self.latencies.append(settled - due)
        else:
            self.learned_s.setdefault(outcome, []).append(settled - due)


async def drive(
    caller: Caller,
    operation: str,
    payload_for: Callable[[int], dict[str, Any]],
    *,
    tag: str,
    rate: float,
    seconds: float,
    warmup: float,
    timeout: float,
    concurrency: int,
    during: Callable[[float], Any] | None = None,
    tail_after_during: float | None = None,
    keep_events: bool = False,
) -> Window:
    """Offer ``rate`` requests/s for ``warmup + seconds``; the window counts the requests due in
    ``[warmup, warmup + seconds)``, tagged ``tag`` (the others ``tag:outside``); every request
    settles by its deadline. ``during(t0)`` (optional, a coroutine function) runs beside the load,
    e.g. to stop and restart a responder; with ``tail_after_during`` the load goes on until it is
    done plus that many seconds. ``keep_events`` keeps every request's (due, outcome, settled)."""
    slots = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()
    window = Window(t0 + warmup, t0 + warmup + seconds, events=[] if keep_events else None)
    tasks: set[asyncio.Task[None]] = set()

    async def one(k: int, due: float) -> None:
        deadline = due + timeout
        try:
            await asyncio.wait_for(slots.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            window.record(due, "no_slot", time.monotonic())
            return
        in_window = window.start <= due < window.end
        try:
            outcome = await caller.call(
                operation, payload_for(k), tag if in_window else f"{tag}:outside", due, deadline
            )
        finally:
            slots.release()
        window.record(due, outcome, time.monotonic())

    def emit(k: int, due: float) -> None:
        task = asyncio.create_task(one(k, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    stop = asyncio.Event()
    side = asyncio.create_task(during(t0)) if during is not None else None
    pacer = asyncio.create_task(paced(rate, emit, stop))
    if side is not None and tail_after_during is not None:
        await side
        await asyncio.sleep(tail_after_during)
    else:
        await asyncio.sleep(warmup + seconds)
    stop.set()
    await pacer
    if tasks:
        await asyncio.wait(set(tasks))
    if side is not None:
        await side
    return window
