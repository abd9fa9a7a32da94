"""The shared Kafka clients against the real broker and Postgres: commit-after-write, DLQ,
retry on failure, resume after a crash with nothing lost and nothing applied twice.

Every test runs twice: on the embedded tansu broker and on the local 3-node Apache Kafka cluster
(RF 3, min.insync.replicas=2), through the ``broker`` fixture below."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from ridehail.common.batch_consumer import BatchConsumer, Decoded, Rejected
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.topics import ensure_topics
from ridehail.domain import events
from ridehail.domain.topics import TopicSpec

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(broker: str, broker_kind: str, request: pytest.FixtureRequest) -> str:
    """The session's tansu broker, or the session's Kafka cluster (``broker_kind`` is parametrised)."""
    if broker_kind == "kafka":
        return str(request.getfixturevalue("kafka_cluster").bootstrap)
    return broker


@pytest.fixture
async def table(pg: asyncpg.Connection) -> AsyncIterator[str]:
    """``n``: how often the event's effect was applied (must end at 1); ``deliveries``: how often
    the handler saw it (a replay after a crash makes it 2 or more)."""
    name = f"applied_{uuid.uuid4().hex[:8]}"
    await pg.execute(
        f"CREATE TABLE {name} (event_id text PRIMARY KEY, driver_id text, seq bigint, n int NOT NULL DEFAULT 0, "
        "deliveries int NOT NULL DEFAULT 0)"
    )
    await pg.execute(f"CREATE TABLE {name}_processed (event_id text PRIMARY KEY)")
    yield name
    await pg.execute(f"DROP TABLE {name}, {name}_processed")


@pytest.fixture
def topic(broker: str) -> TopicSpec:
    spec = TopicSpec(f"test.pings.{uuid.uuid4().hex[:8]}", 3, "driver_id", "test")
    ensure_topics(broker, [spec, TopicSpec(spec.dlq, 1, "driver_id", "dlq")])
    return spec


class Applier:
    """A handler written the way ridehail's consumers are: in one transaction per batch it records
    each event id in a processed-ids table and applies the effect (``n = n + 1``) only when the id
    is new, so a redelivered event changes nothing. ``deliveries`` counts every delivery, outside
    that guard, so the test can see that redeliveries happened and that ``n`` stayed 1 anyway."""

    def __init__(self, dsn: str, table: str, crash_after_commit: int | None = None) -> None:
        self.dsn = dsn.replace("postgresql+asyncpg://", "postgresql://")
        self.table = table
        self.crash_after_commit = crash_after_commit
        self.seen = 0
        self.fail_next = 0

    async def __call__(self, batch: list[Decoded]) -> list[Rejected]:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("database down (simulated by the test's handler)")
        rejected: list[Rejected] = []
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                for item in batch:
                    ev = item.event
                    assert isinstance(ev, events.DriverLocation)
                    if ev.driver_id == "poison":
                        rejected.append(Rejected(item.message, "driver 'poison' is refused by the handler"))
                        continue
                    await conn.execute(
                        f"INSERT INTO {self.table} (event_id, driver_id, seq, deliveries) VALUES ($1, $2, $3, 1) "
                        f"ON CONFLICT (event_id) DO UPDATE SET deliveries = {self.table}.deliveries + 1",
                        ev.event_id,
                        ev.driver_id,
                        ev.seq,
                    )
                    first_time = await conn.fetchval(
                        f"INSERT INTO {self.table}_processed VALUES ($1) ON CONFLICT DO NOTHING RETURNING true",
                        ev.event_id,
                    )
                    if first_time:  # the effect: applied once per event id, whatever the deliveries
                        await conn.execute(f"UPDATE {self.table} SET n = n + 1 WHERE event_id = $1", ev.event_id)
        finally:
            await conn.close()
        self.seen += len(batch)
        if self.crash_after_commit is not None and self.seen >= self.crash_after_commit:
            self.crash_after_commit = None
            raise _Crash()  # committed, offsets NOT stored: the worst moment to die
        return rejected


class _Crash(BaseException):
    pass


def _produce(broker: str, topic: str, pings: list[events.DriverLocation | bytes], key: str = "k") -> None:
    producer = EventProducer(broker, f"test-{uuid.uuid4().hex[:6]}")
    for i, p in enumerate(pings):
        value = p if isinstance(p, bytes) else events.encode(p)
        producer.produce(topic, value, key=p.driver_id if not isinstance(p, bytes) else f"{key}{i}")
    assert producer.close(10) == 0


async def _run_until(consumer: BatchConsumer, cond: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not await cond():
                if task.done():
                    task.result()
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        except _Crash:
            pass


def _consumer(broker: str, topic: TopicSpec, group: str, handler: Applier, dlq: EventProducer) -> BatchConsumer:
    return BatchConsumer(
        bootstrap=broker,
        group_id=group,
        topics=[topic.name],
        decoder=events.EventDecoder(events.DriverLocation),
        handler=handler,
        dlq_producer=dlq,
        name=f"test-{group}",
        batch_max=50,
        batch_timeout_ms=50,
    )


def _dlq_records(broker: str, topic: str, expected: int, timeout: float = 20) -> list:
    c = Consumer({"bootstrap.servers": broker, "group.id": f"dlq-{uuid.uuid4().hex}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join: read the DLQ directly
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(m)
    c.close()
    return out


async def test_commit_after_write_dlq_and_resume_after_crash(
    broker: str, database_url: str, table: str, topic: TopicSpec, pg: asyncpg.Connection
) -> None:
    pings: list[events.DriverLocation | bytes] = [
        events.DriverLocation(driver_id=f"drv-{i % 7}", seq=i, lat=57.7, lon=11.9) for i in range(300)
    ]
    pings.insert(10, b"{this is not json")
    pings.insert(20, b'{"type":"driver.location","v":9,"driver_id":"x","seq":1,"lat":1,"lon":1}')
    pings.insert(30, events.DriverLocation(driver_id="poison", seq=1, lat=57.7, lon=11.9))
    _produce(broker, topic.name, pings)
    group = f"g-{uuid.uuid4().hex[:6]}"
    dlq = EventProducer(broker, "test-dlq")
    count = f"SELECT count(*) FROM {table}"

    # First run dies right after a commit, before its offsets are stored.
    first = Applier(database_url, table, crash_after_commit=120)
    with pytest.raises(_Crash):
        await _run_until(_consumer(broker, topic, group, first, dlq), lambda: _never())
    applied_before = await pg.fetchval(count)
    assert 0 < applied_before < 300

    # The restarted consumer resumes from the last committed offset: some events come again...
    second = Applier(database_url, table)

    async def all_applied() -> bool:
        return await pg.fetchval(count) == 300

    await _run_until(_consumer(broker, topic, group, second, dlq), all_applied)
    assert first.seen + second.seen > 300, "the crash window was not exercised"
    redelivered = await pg.fetchval(f"SELECT count(*) FROM {table} WHERE deliveries > 1")
    assert redelivered > 0, "no event was delivered twice: the crash window was not exercised"
    # Offsets of the batches committed before the crash were stored: only the last batch came again.
    assert redelivered < applied_before, "everything was redelivered: offsets were never stored"
    assert await pg.fetchval(f"SELECT max(deliveries) FROM {table}") == 2
    # ...but every event's effect is applied exactly once.
    assert await pg.fetchval(f"SELECT count(*) FROM {table} WHERE n <> 1") == 0
    assert await pg.fetchval(f"SELECT sum(n) FROM {table}") == 300
    assert await pg.fetchval(f"SELECT count(*) FROM {table}_processed") == 300

    dead = _dlq_records(broker, topic.dlq, 3)
    reasons = sorted(dict(m.headers())["error.reason"].decode() for m in dead)
    assert len(dead) >= 3
    assert any("malformed JSON" in r for r in reasons)
    assert any("version" in r for r in reasons)
    assert any("poison" in r for r in reasons)
    assert all(dict(m.headers())["error.topic"].decode() == topic.name for m in dead)
    assert {m.value() for m in dead} >= {b"{this is not json"}
    dlq.close()


async def _never() -> bool:
    return False


async def test_failing_handler_retries_the_same_batch_and_loses_nothing(
    broker: str, database_url: str, table: str, topic: TopicSpec, pg: asyncpg.Connection
) -> None:
    _produce(broker, topic.name, [events.DriverLocation(driver_id="d", seq=i, lat=1, lon=1) for i in range(100)])
    handler = Applier(database_url, table)
    handler.fail_next = 3  # the database is "down" for three attempts
    dlq = EventProducer(broker, "test-dlq2")

    async def done() -> bool:
        return await pg.fetchval(f"SELECT count(*) FROM {table}") == 100

    await _run_until(_consumer(broker, topic, f"g-{uuid.uuid4().hex[:6]}", handler, dlq), done)
    assert handler.fail_next == 0
    assert await pg.fetchval(f"SELECT max(seq) FROM {table}") == 99
    dlq.close()


async def test_any_exception_applying_one_event_dead_letters_it_and_the_rest_goes_on(
    broker: str, database_url: str, table: str, topic: TopicSpec, pg: asyncpg.Connection
) -> None:
    """A handler that raises for one event (not a refusal it returns: an exception, as a bug or an
    absurd value would) costs that event only: it lands on the DLQ with the exception as reason,
    every other event of its batch and of later batches is applied, nothing is retried forever."""

    class Explodes(Applier):
        async def __call__(self, batch: list[Decoded]) -> list[Rejected]:
            for item in batch:
                if item.event.driver_id == "explodes":  # type: ignore[attr-defined]
                    raise ArithmeticError("quantize result has too many digits")
            return await super().__call__(batch)

    pings: list[events.DriverLocation | bytes] = [
        events.DriverLocation(driver_id=f"drv-{i % 5}", seq=i, lat=57.7, lon=11.9) for i in range(120)
    ]
    pings.insert(37, events.DriverLocation(driver_id="explodes", seq=1, lat=57.7, lon=11.9))
    _produce(broker, topic.name, pings, key="same")
    dlq = EventProducer(broker, "test-dlq3")

    async def applied() -> bool:
        return await pg.fetchval(f"SELECT count(*) FROM {table}") == 120

    await _run_until(_consumer(broker, topic, f"g-{uuid.uuid4().hex[:6]}", Explodes(database_url, table), dlq), applied)
    [dead] = [m for m in _dlq_records(broker, topic.dlq, 1) if b"explodes" in (m.value() or b"")]
    reason = dict(dead.headers())["error.reason"].decode()
    assert "ArithmeticError" in reason and "quantize" in reason
    assert await pg.fetchval(f"SELECT count(*) FROM {table} WHERE driver_id = 'explodes'") == 0
    assert await pg.fetchval(f"SELECT count(*) FROM {table} WHERE n <> 1") == 0
    dlq.close()


async def test_an_unreachable_database_never_dead_letters(
    broker: str, database_url: str, table: str, topic: TopicSpec, pg: asyncpg.Connection
) -> None:
    """Failures of the infrastructure (here: the connection refused, as asyncpg raises it) are not
    the events' fault: the batch is retried until the database answers, the DLQ stays empty."""

    class DownFor(Applier):
        def __init__(self, dsn: str, table: str, attempts: int) -> None:
            super().__init__(dsn, table)
            self.real_dsn, self.attempts = self.dsn, attempts

        async def __call__(self, batch: list[Decoded]) -> list[Rejected]:
            self.dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres" if self.attempts else self.real_dsn
            self.attempts = max(0, self.attempts - 1)
            return await super().__call__(batch)

    _produce(broker, topic.name, [events.DriverLocation(driver_id="d", seq=i, lat=1, lon=1) for i in range(40)])
    handler = DownFor(database_url, table, attempts=4)
    dlq = EventProducer(broker, "test-dlq4")
    consumer = _consumer(broker, topic, f"g-{uuid.uuid4().hex[:6]}", handler, dlq)

    async def applied() -> bool:
        return await pg.fetchval(f"SELECT count(*) FROM {table}") == 40

    await _run_until(consumer, applied)
    assert handler.attempts == 0
    assert consumer.stats.dead_lettered == 0
    dlq.close()
