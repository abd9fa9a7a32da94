"""Kafka clients with the delivery semantics the design depends on.

* :class:`EventProducer`: ``acks=all``, ``enable.idempotence=true`` (librdkafka defaults it to
  false), lz4, no client-side topic auto-creation; a background thread serves delivery reports;
  a fatal error (e.g. UNKNOWN_PRODUCER_ID after a broker restart) recreates the client.
* :class:`BatchConsumer`: takes up to N messages or T ms, dead-letters what cannot be decoded or
  applied (original bytes + error headers on ``<topic>.dlq``), hands the rest to a handler that
  writes Postgres and commits, and only then stores the offsets. A failing handler is retried
  with backoff on the same batch: nothing is skipped, nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from ridehail.common.logging import get_logger
from ridehail.domain.events import Event, EventDecoder, EventError, now_ms

log = get_logger(__name__)

MESSAGES_CONSUMED = Counter("ridehail_consumer_messages_total", "Messages consumed", ["consumer"])
MESSAGES_DEAD_LETTERED = Counter(
    "ridehail_consumer_dead_letters_total", "Messages sent to a dead-letter topic", ["consumer"]
)
BATCH_SIZE = Histogram(
    "ridehail_consumer_batch_size",
    "Messages per consumer batch",
    ["consumer"],
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
)
BATCH_SECONDS = Histogram("ridehail_consumer_batch_seconds", "Time to apply one batch (handler + commit)", ["consumer"])
CONSUMER_LAG = Gauge("ridehail_consumer_lag", "Messages behind the partition end", ["consumer"])
HANDLER_FAILURES = Counter(
    "ridehail_consumer_handler_failures_total", "Batches that failed and were retried", ["consumer"]
)
PRODUCE_ERRORS = Counter("ridehail_producer_delivery_errors_total", "Failed deliveries", ["client"])


def producer_config(bootstrap: str, client_id: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500_000,
        "allow.auto.create.topics": False,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 2000,
        "log_level": 2,  # connection failures reach error_cb (one log line per outage), not stderr per retry
    }
    conf.update(overrides)
    return conf


def consumer_config(bootstrap: str, group_id: str, client_id: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.offset.store": False,  # stored by us, only after the batch committed
        "enable.auto.commit": True,  # commits what we stored, every auto.commit.interval.ms
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,  # the embedded broker's first join waits ~half of this
        "heartbeat.interval.ms": 1000,
        "allow.auto.create.topics": False,
        "statistics.interval.ms": 1000,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 2000,
        "fetch.wait.max.ms": 50,
        "topic.metadata.refresh.interval.ms": 5000,  # notice re-created topics soon after a broker restart
        "log_level": 2,
    }
    conf.update(overrides)
    return conf


class _EveryNSeconds:
    """librdkafka reports "all brokers down" on every reconnect cycle: log it once per period."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.period_s:
            return False
        self._last[key] = now
        return True


_outage_log = _EveryNSeconds(60.0)

STALL_AFTER_S = 10.0  # pending messages, a reachable broker, no delivery for this long: recreate

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class EventProducer:
    """Thread-safe producer; ``produce`` never blocks the event loop for long.

    When the client has to be replaced (a fatal error, or the stall that follows a restart of the
    embedded broker), the messages it still holds are purged and produced again on the new client,
    so nothing is dropped on the floor: at worst a message in flight is written twice, which the
    idempotent consumers absorb.
    """

    def __init__(self, bootstrap: str, client_id: str, **overrides: Any) -> None:
        self._conf = producer_config(bootstrap, client_id, error_cb=self._on_error, **overrides)
        self._client_id = client_id
        self._lock = threading.RLock()
        self._producer = Producer(self._conf)
        self._fatal = threading.Event()
        self._running = True
        self._replacing = False
        self.delivered = 0
        self.failed = 0
        self.requeued = 0
        self._last_success = time.monotonic()
        self._last_stall_check = 0.0
        self._last_failure_log = 0.0
        self._failed_at_last_log = 0
        self._poller = threading.Thread(target=self._poll_loop, name=f"{client_id}-poll", daemon=True)
        self._poller.start()

    # -- errors and recreation ---------------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("producer_fatal_error", client=self._client_id, error=err.str())
            self._fatal.set()
        elif err.code() == KafkaError._ALL_BROKERS_DOWN and _outage_log.allow(self._client_id):
            log.warning("broker_unreachable", client=self._client_id, error=err.str())

    def _recreate(self, failed: Producer, reason: str) -> None:
        """Replace ``failed`` by a fresh client (once, even if several threads notice the failure)."""
        with self._lock:
            if self._producer is not failed:
                return
            self._producer = Producer(self._conf)
            self._fatal.clear()
            self._last_success = time.monotonic()
            held = len(failed)
            self._replacing = True
            try:
                with contextlib.suppress(Exception):
                    failed.purge(in_queue=True, in_flight=True, blocking=False)
                with contextlib.suppress(Exception):
                    failed.poll(0)  # purge reports: _requeue_or_report puts them on the new client
            finally:
                self._replacing = False
        log.warning("producer_recreated", client=self._client_id, reason=reason, requeued=held)

    @staticmethod
    def _is_fatal(exc: KafkaException) -> bool:
        err = exc.args[0] if exc.args else None
        return isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL)

    def _check_stalled(self, producer: Producer) -> None:
        """Recreate a client that holds messages, hears the broker, yet delivers nothing.

        After the embedded broker restarts it has forgotten every producer id; librdkafka 2.16 then
        bumps its epoch forever on UNKNOWN_PRODUCER_ID without asking for a new id (no fatal error
        is raised). A new client asks for one.
        """
        now = time.monotonic()
        if now - self._last_stall_check < 2.0:
            return
        self._last_stall_check = now
        if len(producer) == 0 or now - self._last_success < STALL_AFTER_S:
            return
        try:
            producer.list_topics(timeout=2)  # the broker answers: not an outage, a stall
        except KafkaException:
            return
        self._recreate(producer, "stalled")

    def _poll_loop(self) -> None:
        while self._running:
            producer = self._producer
            if self._fatal.is_set():
                self._recreate(producer, "fatal error")
                continue
            try:
                producer.poll(0.05)
                self._check_stalled(producer)
            except KafkaException as exc:
                if self._is_fatal(exc):
                    log.error("producer_fatal_error", client=self._client_id, error=str(exc))
                    self._fatal.set()
                else:
                    log.warning("producer_poll_error", client=self._client_id, error=str(exc))
                    time.sleep(0.05)
            except Exception as exc:
                log.error("producer_callback_failed", client=self._client_id, error=repr(exc)[:300])

    def _wrap(self, callback: DeliveryCallback) -> DeliveryCallback:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                self._last_success = time.monotonic()  # for every callback, not only the default one
            elif self._replacing and err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
                self.requeued += 1
                self._produce_now(
                    self._producer, msg.topic() or "", msg.value(), msg.key(), message_headers(msg), callback, 0
                )
                return
            callback(err, msg)

        return report

    # -- producing ---------------------------------------------------------------------------------
    def _produce_now(
        self,
        producer: Producer,
        topic: str,
        value: bytes | None,
        key: str | bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        callback: DeliveryCallback,
        timestamp_ms: int,
    ) -> None:
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers) if headers else None,
                    on_delivery=self._wrap(callback),
                    timestamp=timestamp_ms,
                )
                return
            except BufferError:
                producer.poll(0.01)  # local queue full: wait for deliveries

    def produce(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        callback = on_delivery or self._default_report
        while True:
            producer = self._producer
            try:
                with self._lock:  # never onto a client that is being replaced
                    self._produce_now(producer, topic, value, key, headers, callback, timestamp_ms)
                return
            except KafkaException as exc:
                if not self._is_fatal(exc):
                    raise
                self._recreate(producer, "fatal error")  # then produce on the new client

    def _default_report(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            PRODUCE_ERRORS.labels(self._client_id).inc()
            now = time.monotonic()
            if now - self._last_failure_log >= 5.0:  # one line per 5 s in an outage, with the count
                log.error(
                    "delivery_failed",
                    client=self._client_id,
                    topic=msg.topic(),
                    error=err.str(),
                    failed_since_last_log=self.failed - self._failed_at_last_log,
                )
                self._last_failure_log, self._failed_at_last_log = now, self.failed

    async def send(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        timestamp_ms: int = 0,
    ) -> Message:
        """Produce and wait until the broker acknowledged the message (acks=all)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()

        def report(err: KafkaError | None, msg: Message) -> None:
            self._default_report(err, msg)

            def settle() -> None:
                if fut.done():
                    return
                if err is None:
                    fut.set_result(msg)
                else:
                    fut.set_exception(KafkaException(err))

            loop.call_soon_threadsafe(settle)

        self.produce(topic, value, key, headers, report, timestamp_ms)
        return await fut

    def pending(self) -> int:
        return len(self._producer)

    def flush(self, timeout_s: float = 10.0) -> int:
        return self._producer.flush(timeout_s)

    async def flush_async(self, timeout_s: float = 30.0) -> None:
        remaining = await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout_s)
        if remaining:
            raise RuntimeError(f"{remaining} message(s) not delivered within {timeout_s}s")

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush (up to ``timeout_s``) and stop; return how many messages were left undelivered."""
        remaining = self.flush(timeout_s)
        self._running = False
        self._poller.join(timeout=1)
        return remaining


# -- consuming ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Decoded:
    """A message that decoded into an event, with the raw message kept for the DLQ."""

    event: Event
    message: Message


@dataclass(slots=True)
class Rejected:
    message: Message
    reason: str


BatchHandler = Callable[[list[Decoded]], Awaitable[list[Rejected]]]


Headers = list[tuple[str, bytes | None]]


def message_headers(msg: Message) -> Headers:
    """A consumed message's headers as (name, value) pairs (the client types them loosely)."""
    raw = msg.headers()
    if not raw:
        return []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in pairs]


def dead_letter_headers(msg: Message, reason: str, consumer: str) -> Headers:
    headers = message_headers(msg)
    headers += [
        ("error.reason", reason.encode()[:1000]),
        ("error.consumer", consumer.encode()),
        ("error.topic", (msg.topic() or "").encode()),
        ("error.partition", str(msg.partition()).encode()),
        ("error.offset", str(msg.offset()).encode()),
        ("error.ts", str(now_ms()).encode()),
    ]
    return headers


@dataclass
class ConsumerStats:
    consumed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    lag: int = 0
    last_batch_at: float = 0.0
    healthy: bool = False
    partitions: set[tuple[str, int]] = field(default_factory=set)


class BatchConsumer:
    """Consume -> decode -> handler (DB transaction) -> store offsets, in that order, forever."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        decoder: EventDecoder,
        handler: BatchHandler,
        dlq_producer: EventProducer,
        name: str,
        batch_max: int = 5000,
        batch_timeout_ms: int = 100,
        max_message_bytes: int = 64 * 1024,
        **overrides: Any,
    ) -> None:
        self.name = name
        self._conf = consumer_config(
            bootstrap,
            group_id,
            name,
            stats_cb=self._on_stats,
            error_cb=self._on_error,
            **overrides,
        )
        self._topics = list(topics)
        self._decoder = decoder
        self._handler = handler
        self._dlq = dlq_producer
        self._batch_max = batch_max
        self._batch_timeout_s = batch_timeout_ms / 1000
        self._max_bytes = max_message_bytes
        self._consumer: Consumer | None = None
        self._fatal = threading.Event()
        self.stats = ConsumerStats()

    # -- callbacks (librdkafka threads / consume thread) ---------------------------------------------
    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
            lag = 0
            for topic in stats.get("topics", {}).values():
                for pid, part in topic.get("partitions", {}).items():
                    if pid != "-1" and part.get("consumer_lag", -1) >= 0:
                        lag += part["consumer_lag"]
            self.stats.lag = lag
            CONSUMER_LAG.labels(self.name).set(lag)
        except (ValueError, KeyError, TypeError):
            pass

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("consumer_fatal_error", consumer=self.name, error=err.str())
            self._fatal.set()
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.stats.healthy = False
            if _outage_log.allow(self.name):
                log.warning("broker_unreachable", consumer=self.name, error=err.str())

    def _on_assign(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.partitions |= {(p.topic, p.partition) for p in partitions}
        log.info("partitions_assigned", consumer=self.name, count=len(partitions))

    def _on_revoke(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.partitions -= {(p.topic, p.partition) for p in partitions}
        log.info("partitions_revoked", consumer=self.name, count=len(partitions))

    # -- lifecycle ---------------------------------------------------------------------------------
    def _create(self) -> Consumer:
        consumer = Consumer(self._conf)
        consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._consumer = self._create()
        try:
            while not stop.is_set():
                if self._fatal.is_set():
                    await loop.run_in_executor(None, self._consumer.close)
                    self._consumer = self._create()
                    self._fatal.clear()
                    log.warning("consumer_recreated", consumer=self.name)
                consumer = self._consumer
                messages = await loop.run_in_executor(None, consumer.consume, self._batch_max, self._batch_timeout_s)
                if not messages:
                    continue
                await self._process(messages, stop)
        finally:
            consumer = self._consumer
            self._consumer = None
            await loop.run_in_executor(None, consumer.close)
            log.info("consumer_closed", consumer=self.name)

    async def _process(self, messages: list[Message], stop: asyncio.Event) -> None:
        good: list[Decoded] = []
        bad: list[Rejected] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume_error", consumer=self.name, error=err.str())
                continue
            value = msg.value()
            if value is not None and len(value) > self._max_bytes:
                bad.append(Rejected(msg, f"message too large: {len(value)} bytes > {self._max_bytes}"))
                continue
            try:
                good.append(Decoded(self._decoder.decode(value), msg))
            except EventError as exc:
                bad.append(Rejected(msg, exc.reason))
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                rejected = await self._handler(good) if good else []
                break
            except Exception as exc:
                HANDLER_FAILURES.labels(self.name).inc()
                self.stats.healthy = False
                log.warning("batch_failed_retrying", consumer=self.name, error=repr(exc)[:300], retry_in_s=delay)
                if stop.is_set():
                    return  # offsets not stored: the batch is consumed again after restart
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        bad.extend(rejected)
        if bad:
            for r in bad:
                log.warning(
                    "dead_lettered",
                    consumer=self.name,
                    topic=r.message.topic(),
                    offset=r.message.offset(),
                    reason=r.reason[:200],
                )
                self._dlq.produce(
                    f"{r.message.topic()}.dlq",
                    r.message.value() or b"",
                    r.message.key(),
                    dead_letter_headers(r.message, r.reason, self.name),
                )
            await self._dlq.flush_async()
            MESSAGES_DEAD_LETTERED.labels(self.name).inc(len(bad))
        self._store_offsets(messages)
        n = len(messages)
        self.stats.consumed += n
        self.stats.dead_lettered += len(bad)
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()
        self.stats.healthy = True
        MESSAGES_CONSUMED.labels(self.name).inc(n)
        BATCH_SIZE.labels(self.name).observe(n)

    def _store_offsets(self, messages: list[Message]) -> None:
        assert self._consumer is not None
        last: dict[tuple[str, int], int] = {}
        for msg in messages:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if msg.error() is None and topic is not None and partition is not None and offset is not None:
                key = (topic, partition)
                last[key] = max(last.get(key, -1), offset)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        if not offsets:
            return
        try:
            self._consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            # Partition revoked meanwhile: its new owner re-applies (idempotently) from the last commit.
            log.warning("store_offsets_failed", consumer=self.name, error=str(exc))

    def commit_now(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    raise
