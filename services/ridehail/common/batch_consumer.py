"""The batch consumer every ridehail service uses: waits for a first message, takes what else
comes within T ms (up to N; :func:`ridehail.common.kafka.consume_batch`), dead-letters what
cannot be decoded or applied (original bytes + error headers on ``<topic>.dlq``), hands the
rest to a handler that writes Postgres and commits, and only then stores the offsets.

Two kinds of handler failure, told apart by :func:`ridehail.common.failures.is_infrastructure_failure`:

* the infrastructure failed (the database refused the connection or lost it, a time-out): the same
  batch is retried with backoff, forever if need be: nothing is skipped, nothing is lost;
* anything else (an exception the events caused, whatever its type): the batch is split in halves
  and each half applied again, down to the one event that fails alone; that event is dead-lettered
  with the exception as its reason and every other event is applied. A handler is idempotent (it
  must be anyway: a batch is re-applied after a crash), so re-applying a half changes nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from ridehail.common.failures import describe, is_infrastructure_failure
from ridehail.common.kafka import (
    EventProducer,
    Headers,
    _outage_log,
    consume_batch,
    consumer_config,
    message_headers,
)
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
ISOLATIONS = Counter(
    "ridehail_consumer_isolations_total",
    "Batches split to find the event whose application raised (not an infrastructure failure)",
    ["consumer"],
)


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
        self._consumer = self._create()
        try:
            while not stop.is_set():
                if self._fatal.is_set():
                    await asyncio.to_thread(self._consumer.close)
                    self._consumer = self._create()
                    self._fatal.clear()
                    log.warning("consumer_recreated", consumer=self.name)
                consumer = self._consumer
                # to_thread, not run_in_executor: the thread sees this task's context, so the
                # client's callbacks (assign, revoke, errors) log with the service's name
                messages = await asyncio.to_thread(consume_batch, consumer, self._batch_max, self._batch_timeout_s)
                if not messages:
                    continue
                await self._process(messages, stop)
        finally:
            consumer = self._consumer
            self._consumer = None
            await asyncio.to_thread(consumer.close)
            log.info("consumer_closed", consumer=self.name)

    def _decode(self, messages: list[Message]) -> tuple[list[Decoded], list[Rejected]]:
        """Decode ``messages``: the whole batch in one pass when every message is clean (the
        usual case: no per-message Python frame), else one by one, each failure with its reason."""
        values = list(map(Message.value, messages))
        if not any(map(Message.error, messages)) and None not in values:
            clean = cast(list[bytes], values)
            if max(map(len, clean)) <= self._max_bytes and (events := self._decoder.decode_many(clean)) is not None:
                return list(map(Decoded, events, messages)), []
        good: list[Decoded] = []
        bad: list[Rejected] = []
        for msg, value in zip(messages, values, strict=True):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume_error", consumer=self.name, error=err.str())
                continue
            if value is not None and len(value) > self._max_bytes:
                bad.append(Rejected(msg, f"message too large: {len(value)} bytes > {self._max_bytes}"))
                continue
            try:
                good.append(Decoded(self._decoder.decode(value), msg))
            except EventError as exc:
                bad.append(Rejected(msg, exc.reason))
            except Exception as exc:  # a decoder must never stop the consumer either
                bad.append(Rejected(msg, f"could not be decoded: {describe(exc)}"))
        return good, bad

    async def _process(self, messages: list[Message], stop: asyncio.Event) -> None:
        good, bad = self._decode(messages)
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                rejected = await self._apply(good) if good else []
                break
            except Exception as exc:  # only infrastructure failures get here (see _apply)
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
            if not await self._dead_letter(bad, stop):
                return  # stopping with the DLQ unreachable: offsets not stored, the batch comes again
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

    async def _dead_letter(self, bad: list[Rejected], stop: asyncio.Event) -> bool:
        """Write ``bad`` to the dead-letter topics until the broker acknowledges them (a broker that
        is away delays the consumer, never ends it); False if asked to stop first."""
        delay = 0.2
        while True:
            try:
                for r in bad:
                    self._dlq.produce(
                        f"{r.message.topic()}.dlq",
                        r.message.value() or b"",
                        r.message.key(),
                        dead_letter_headers(r.message, r.reason, self.name),
                    )
                await self._dlq.flush_async()
                return True
            except Exception as exc:  # e.g. not delivered in time: produced again (the DLQ is at-least-once)
                self.stats.healthy = False
                log.warning("dead_letter_failed_retrying", consumer=self.name, error=repr(exc)[:300], retry_in_s=delay)
                if stop.is_set():
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _apply(self, batch: list[Decoded]) -> list[Rejected]:
        """The handler on ``batch``; an exception that is not an infrastructure failure is narrowed
        down by halving the batch until the one event that raises alone is rejected with it."""
        try:
            return await self._handler(batch)
        except Exception as exc:
            if is_infrastructure_failure(exc):
                raise
            if len(batch) == 1:
                return [Rejected(batch[0].message, f"could not be applied: {describe(exc)}")]
            ISOLATIONS.labels(self.name).inc()
            log.warning("batch_failed_isolating", consumer=self.name, size=len(batch), error=describe(exc))
            half = len(batch) // 2
            return [*await self._apply(batch[:half]), *await self._apply(batch[half:])]

    def _store_offsets(self, messages: list[Message]) -> None:
        assert self._consumer is not None
        # librdkafka hands out each partition's messages in offset order: the last one per
        # partition is its highest (one dict comprehension, not a max() per message).
        last = {(m.topic(), m.partition()): m.offset() for m in messages if m.error() is None}
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items() if t and p is not None and o is not None]
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
