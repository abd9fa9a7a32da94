"""Where the edge puts a ping: Postgres (``rest``) or the broker (``rest-kafka``).

Both raise :class:`SinkUnavailable` when their backend does not answer in time; the app turns
that into ``503`` with ``Retry-After``. Neither connects at import or construction time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Literal, Protocol

import asyncpg
from confluent_kafka import KafkaError, KafkaException, Message
from prometheus_client import Counter

from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, encode
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.ingest.group_commit import GroupCommit
from ridehail.stores import drivers

log = get_logger(__name__)

Outcome = Literal["stored", "stale", "acknowledged", "queued"]

COMMITS = Counter("ridehail_ingest_commits_total", "Upsert statements written to Postgres (rest mode)", ["kind"])


class SinkUnavailable(RuntimeError):
    """The backend (Postgres or broker) did not take the ping; the client should retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PingSink(Protocol):
    name: str

    async def start(self) -> None: ...
    async def write(self, ping: DriverLocation) -> Outcome: ...
    async def write_many(self, pings: Sequence[DriverLocation]) -> list[Outcome]: ...
    async def readiness(self) -> dict[str, bool]: ...
    async def close(self) -> None: ...


_DB_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def newest_per_driver(pings: Sequence[DriverLocation]) -> tuple[list[DriverLocation], list[int]]:
    """The newest ping of each driver (sorted by driver id, so concurrent statements lock rows in
    one order), and for each input ping the index of the chosen ping it lost to or is (-1: older
    than another ping of its driver in the same batch, so ``stale`` without touching Postgres)."""
    best: dict[str, int] = {}
    for i, ping in enumerate(pings):
        j = best.get(ping.driver_id)
        if j is None or ping.seq > pings[j].seq:
            best[ping.driver_id] = i
    chosen = sorted(best.values(), key=lambda i: pings[i].driver_id)
    winner = [i if best[p.driver_id] == i else -1 for i, p in enumerate(pings)]
    return [pings[i] for i in chosen], winner


class PostgresSink:
    """``rest``: one idempotent upsert per request on a pooled asyncpg connection (autocommit);
    with ``group_commit_s`` > 0, single pings are written in groups (:mod:`ridehail.ingest.group_commit`);
    a batch is always one statement."""

    name = "postgres"

    def __init__(
        self,
        database_url: str,
        pool_size: int,
        timeout_s: float,
        group_commit_s: float = 0.0,
        group_commit_max: int = 1000,
    ) -> None:
        self._dsn = to_asyncpg_dsn(database_url)
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self.group = GroupCommit(self._upsert_group, group_commit_s, group_commit_max) if group_commit_s > 0 else None

    async def start(self) -> None:
        # min_size=0: no connection at start, so the edge comes up (and answers 503) while Postgres is down.
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._pool_size,
            timeout=self._timeout_s,
            command_timeout=self._timeout_s,
            server_settings={"application_name": "ridehail-ingest"},
        )

    async def write(self, ping: DriverLocation) -> Outcome:
        assert self._pool is not None, "start() first"
        if self.group is not None:  # the same deadline as a single write, plus the group's window
            try:
                async with asyncio.timeout(self._timeout_s + self.group.window_s):
                    return await self.group.write(ping)  # type: ignore[return-value]
            except TimeoutError as exc:
                raise SinkUnavailable("database unavailable: group commit timed out") from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                stored = await drivers.upsert_one(self._pool, ping, self._timeout_s)
        except _DB_DOWN as exc:
            raise SinkUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        finally:
            COMMITS.labels("single").inc()
        return "stored" if stored else "stale"

    async def _upsert_group(self, pings: Sequence[DriverLocation]) -> list[str]:
        return list(await self._write_many(pings, "group"))

    async def write_many(self, pings: Sequence[DriverLocation]) -> list[Outcome]:
        return await self._write_many(pings, "batch")

    async def _write_many(self, pings: Sequence[DriverLocation], kind: str) -> list[Outcome]:
        """All of ``pings`` in ONE upsert statement (newest seq per driver wins)."""
        assert self._pool is not None, "start() first"
        newest, winner = newest_per_driver(pings)
        try:
            async with asyncio.timeout(self._timeout_s):
                changed = await drivers.upsert_locations_returning(self._pool, newest, self._timeout_s)
        except _DB_DOWN as exc:
            raise SinkUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        finally:
            COMMITS.labels(kind).inc()
        return ["stored" if w >= 0 and p.driver_id in changed else "stale" for p, w in zip(pings, winner, strict=True)]

    async def readiness(self) -> dict[str, bool]:
        if self._pool is None:
            return {"database": False}
        try:
            async with asyncio.timeout(2.0):
                await self._pool.fetchval("SELECT 1")
        except _DB_DOWN:
            return {"database": False}
        return {"database": True}

    async def close(self) -> None:
        if self.group is not None:
            await self.group.close()
        if self._pool is not None:
            await self._pool.close()


class KafkaSink:
    """``rest-kafka``: produce to ``ridehail.driver.location.v1`` (key driver_id, acks=all,
    idempotent). ``ack="broker"`` answers after the broker's acknowledgement; ``ack="enqueue"``
    answers once librdkafka queued the record (faster, but a record that later fails to deliver
    was already answered 202: see docs/experiments)."""

    name = "kafka"

    def __init__(self, bootstrap: str, ack: Literal["broker", "enqueue"], timeout_s: float) -> None:
        self._bootstrap = bootstrap
        self.ack = ack
        self._timeout_s = timeout_s
        self._producer: EventProducer | None = None
        self._admin: object | None = None
        self.delivery_failures = 0
        self.recreated = 0
        self._queue_limit = 400_000
        self._failures_in_a_row = 0
        self._recreated_at = 0.0
        self._last_delivery = 0.0

    def _new_producer(self) -> EventProducer:
        timeout_ms = max(int(self._timeout_s * 1000), 1000)
        return EventProducer(self._bootstrap, "ingest", **{"message.timeout.ms": timeout_ms, "linger.ms": 2})

    async def start(self) -> None:
        self._producer = self._new_producer()
        self._recreated_at = self._last_delivery = time.monotonic()

    def _stuck(self) -> bool:
        """Records waiting but nothing delivered (nor failed) for a while: the client is wedged."""
        assert self._producer is not None
        quiet_s = time.monotonic() - max(self._last_delivery, self._recreated_at)
        return self._producer.pending() > 0 and quiet_s > 2 * self._timeout_s

    def _failed(self) -> None:
        """Deliveries that keep failing after a broker restart: an idempotent producer whose
        producer id the broker forgot never recovers by itself, so start a fresh one."""
        self._failures_in_a_row += 1
        settled = time.monotonic() - self._recreated_at > 2 * self._timeout_s
        if (self._failures_in_a_row >= 3 or self._stuck()) and settled:
            old, self._producer = self._producer, self._new_producer()
            self._recreated_at = time.monotonic()
            self._failures_in_a_row = 0
            self.recreated += 1
            log.warning("ingest_producer_recreated", reason="deliveries keep failing")
            if old is not None:
                threading.Thread(target=old.close, args=(0.5,), daemon=True).start()

    def _on_delivery(self, err: KafkaError | None, _: Message) -> None:
        self._last_delivery = time.monotonic()
        if err is not None:
            self.delivery_failures += 1
            self._failures_in_a_row += 1
            log.error("delivery_failed_after_202", error=err.str())
        else:
            self._failures_in_a_row = 0

    async def write(self, ping: DriverLocation) -> Outcome:
        producer = self._producer
        assert producer is not None, "start() first"
        value = encode(ping)
        if self.ack == "enqueue":
            if self._failures_in_a_row >= 3 or self._stuck():
                self._failed()
                producer = self._producer
                assert producer is not None, "_failed() replaces the producer"
            if producer.pending() >= self._queue_limit:
                raise SinkUnavailable("producer queue full: broker not keeping up")
            try:
                producer.produce(DRIVER_LOCATION.name, value, ping.driver_id, on_delivery=self._on_delivery)
            except KafkaException as exc:
                raise SinkUnavailable(f"broker unavailable: {exc.args[0].str()}") from exc
            return "queued"
        try:
            async with asyncio.timeout(self._timeout_s + 1.0):
                await producer.send(DRIVER_LOCATION.name, value, ping.driver_id)
        except (KafkaException, TimeoutError) as exc:
            self._failed()
            raise SinkUnavailable(f"broker unavailable: {type(exc).__name__}") from exc
        self._failures_in_a_row = 0
        return "acknowledged"

    async def write_many(self, pings: Sequence[DriverLocation]) -> list[Outcome]:
        """Produce every ping (each its own record, keyed by driver); answered together."""
        if not pings:
            return []
        return list(await asyncio.gather(*(self.write(p) for p in pings)))

    def _list_topics(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self._bootstrap, "log_level": 2})
        try:
            meta = self._admin.list_topics(DRIVER_LOCATION.name, timeout=2)  # type: ignore[attr-defined]
        except KafkaException:
            return False
        topic = meta.topics.get(DRIVER_LOCATION.name)
        return topic is not None and topic.error is None

    async def readiness(self) -> dict[str, bool]:
        return {"broker": await asyncio.to_thread(self._list_topics)}

    async def close(self) -> None:
        if self._producer is not None:
            remaining = await asyncio.to_thread(self._producer.close, 5.0)
            if remaining:
                log.warning("ingest_undelivered_at_close", remaining=remaining)
