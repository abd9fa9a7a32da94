"""Kafka client settings and the producer with the delivery semantics the design depends on.

* :func:`producer_config`, :func:`consumer_config`: every client's settings in one place.
* :class:`EventProducer`: ``acks=all``, ``enable.idempotence=true`` (librdkafka defaults it to
  false), lz4, no client-side topic auto-creation; a background thread serves delivery reports;
  a fatal error (e.g. UNKNOWN_PRODUCER_ID after a broker restart), or a stall after a broker
  restart, recreates the client and produces what the old one held again.

The consumer side is :mod:`ridehail.common.batch_consumer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter

from ridehail.common.logging import get_logger

log = get_logger(__name__)

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


def delivery_overrides(acks: str = "all", message_timeout_s: float | None = None) -> dict[str, Any]:
    """Overrides of :func:`producer_config` for a producer with other delivery settings:
    ``acks`` ``"all"`` (idempotent, the default), ``"1"`` (the leader's ack only) or ``"0"`` (no ack:
    fire-and-forget); idempotence needs ``acks=all``, so it is off for the other two.
    ``message_timeout_s``: how long librdkafka retries a record before failing it (default 300 s).
    Pass the result as ``EventProducer(bootstrap, client_id, **delivery_overrides(...))``."""
    if acks not in ("all", "1", "0"):
        raise ValueError(f"acks must be 'all', '1' or '0', got {acks!r}")
    out: dict[str, Any] = {"acks": acks, "enable.idempotence": acks == "all"}
    if message_timeout_s is not None:
        if message_timeout_s <= 0:
            raise ValueError(f"message_timeout_s must be > 0, got {message_timeout_s}")
        ms = int(message_timeout_s * 1000)
        out["message.timeout.ms"] = ms
        out["request.timeout.ms"] = min(30_000, ms)  # one request may not outlive the record
    return out


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
PURGE_DRAIN_S = 10.0  # how long a replaced client is polled for the reports of what it held

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
        # The poll thread runs in a copy of the creator's context: its lines (delivery failures, a
        # stall, a recreated client) carry the service's log fields, also in a shared process.
        self._poller = threading.Thread(
            target=contextvars.copy_context().run, args=(self._poll_loop,), name=f"{client_id}-poll", daemon=True
        )
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
            unreported = 0
            try:
                with contextlib.suppress(Exception):
                    failed.purge(in_queue=True, in_flight=True, blocking=False)
                # Every purged message reports (_PURGE_QUEUE / _PURGE_INFLIGHT) on a later poll, and
                # the report puts it on the new client: poll until the old one holds nothing, or a
                # message would vanish without a delivery report (neither delivered nor failed).
                deadline = time.monotonic() + PURGE_DRAIN_S
                while len(failed) > 0 and time.monotonic() < deadline:
                    with contextlib.suppress(Exception):
                        failed.poll(0.05)
                unreported = len(failed)
            finally:
                self._replacing = False
        log.warning("producer_recreated", client=self._client_id, reason=reason, requeued=held)
        if unreported:
            self.failed += unreported
            log.error("producer_purge_unreported", client=self._client_id, messages=unreported)

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
        except KafkaException as exc:
            if _outage_log.allow(f"{self._client_id}-stall"):
                log.warning(
                    "producer_waiting",
                    client=self._client_id,
                    pending=len(producer),
                    since_last_delivery_s=round(now - self._last_success, 1),
                    metadata_error=str(exc)[:200],
                )
            return
        self._recreate(producer, "stalled")

    def _poll_loop(self) -> None:
        while self._running:
            producer = self._producer
            if self._fatal.is_set():
                try:
                    self._recreate(producer, "fatal error")
                except Exception as exc:  # no new client (yet): say so once a minute, try again in 1 s
                    if _outage_log.allow(f"{self._client_id}-recreate"):
                        log.error("producer_recreate_failed", client=self._client_id, error=repr(exc)[:300])
                    time.sleep(1.0)
                continue
            try:  # nothing may end this thread: a dead poller leaves every message unreported
                producer.poll(0.05)
                self._check_stalled(producer)
            except KafkaException as exc:
                if self._is_fatal(exc):
                    log.error("producer_fatal_error", client=self._client_id, error=str(exc))
                    self._fatal.set()
                else:
                    log.warning("producer_poll_error", client=self._client_id, error=str(exc))
                    time.sleep(0.05)
            except Exception as exc:  # a delivery callback raised: the next poll serves the rest
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
            # The client is read under the lock: a produce that waited while the client was replaced
            # goes to the new one (the old one is polled by nobody: a message there would vanish
            # without a delivery report; a fault test on the cluster lost one that way).
            with self._lock:
                producer = self._producer
                try:
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
        """Wait (up to ``timeout_s``) until the client holds nothing; return how many it still holds.

        The client may be replaced while this waits (a stall or a fatal error): what the old one
        held is moved to the new one, so the wait follows the current client, never a replaced one
        (which would report nothing left while the new client still holds everything).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            producer = self._producer
            left = producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            if producer is self._producer and (left == 0 or time.monotonic() >= deadline):
                return left

    async def flush_async(self, timeout_s: float = 30.0) -> None:
        remaining = await asyncio.to_thread(self.flush, timeout_s)
        if remaining:
            raise RuntimeError(f"{remaining} message(s) not delivered within {timeout_s}s")

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush (up to ``timeout_s``) and stop; return how many messages were left undelivered."""
        remaining = self.flush(timeout_s)
        self._running = False
        self._poller.join(timeout=1)
        return remaining


# -- consuming ---------------------------------------------------------------------------------------


Headers = list[tuple[str, bytes | None]]


def message_headers(msg: Message) -> Headers:
    """A consumed message's headers as (name, value) pairs (the client types them loosely)."""
    raw = msg.headers()
    if not raw:
        return []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in pairs]


IDLE_WAIT_S = 0.25  # how long one blocking call waits for a first message (bounds the stop latency)


def consume_batch(consumer: Any, max_messages: int, fill_s: float, idle_s: float = IDLE_WAIT_S) -> list[Message]:
    """Block until a first message arrives (at most ``idle_s``), then take what else comes within
    ``fill_s`` (0: only what is already fetched), up to ``max_messages`` in all.

    ``consumer.consume(n, t)`` alone waits for ``n`` messages or the full ``t``, so a short ``t``
    made an idle consumer spin. Here an idle consumer blocks in one call; a message that arrives
    alone waits ``fill_s`` for company (the ride consumers use 2 ms or none), and a busy consumer
    still gets big batches. Call it off the event loop."""
    first: list[Message] = consumer.consume(1, idle_s)
    if not first or max_messages <= 1:
        return first
    more: list[Message] = consumer.consume(max_messages - 1, fill_s)
    return first + more
