"""Faults on the local 3-node Kafka cluster (RF 3, min.insync.replicas=2), under load, with exact
accounting: every record the producer was told is acknowledged (a delivery report without error)
must be applied to Postgres, and no record's effect may be applied twice.

Each test produces unique pings at a steady rate through the project's EventProducer, consumes
them with the project's BatchConsumer into a Postgres table (effect guarded by a processed-ids
table, deliveries counted outside the guard), injects one fault for real (kill -9 of a JVM, a
link brought down, every node stopped), repairs it, and compares the three sets: produced,
acknowledged, persisted. The producer's stall (the longest any acknowledged record waited) is
printed and recorded in the JUnit XML.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from ridehail.cluster.accounting import AckLedger
from ridehail.cluster.cluster import LocalCluster
from ridehail.cluster.faults import KillBrokers, PartitionBroker, RestartCluster
from ridehail.common.batch_consumer import BatchConsumer, Decoded, Rejected
from ridehail.common.kafka import EventProducer
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.common.topics import ensure_topics
from ridehail.domain import events
from ridehail.domain.topics import TopicSpec

pytestmark = pytest.mark.integration

RATE = 400  # pings per second
PARTITIONS = 6


@pytest.fixture
async def table(pg: asyncpg.Connection) -> AsyncIterator[str]:
    name = f"fault_{uuid.uuid4().hex[:8]}"
    await pg.execute(f"CREATE TABLE {name} (event_id text PRIMARY KEY, n int NOT NULL, deliveries int NOT NULL)")
    await pg.execute(f"CREATE TABLE {name}_processed (event_id text PRIMARY KEY)")
    yield name
    await pg.execute(f"DROP TABLE {name}, {name}_processed")


class BatchApplier:
    """One transaction per batch: count every delivery, apply the effect (n += 1) only for event
    ids not processed before: at-least-once delivery, exactly-once effect."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn = to_asyncpg_dsn(dsn)
        self.table = table
        self.conn: asyncpg.Connection | None = None

    async def __call__(self, batch: list[Decoded]) -> list[Rejected]:
        ids = [item.event.event_id for item in batch]
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn)
        t = self.table
        async with self.conn.transaction():
            await self.conn.execute(
                f"INSERT INTO {t} (event_id, n, deliveries) SELECT DISTINCT x, 0, 0 FROM unnest($1::text[]) x "
                "ON CONFLICT DO NOTHING",
                ids,
            )
            await self.conn.execute(
                f"UPDATE {t} SET deliveries = {t}.deliveries + c.k FROM "
                f"(SELECT x, count(*) AS k FROM unnest($1::text[]) x GROUP BY x) c WHERE {t}.event_id = c.x",
                ids,
            )
            await self.conn.execute(
                f"WITH fresh AS (INSERT INTO {t}_processed SELECT DISTINCT x FROM unnest($1::text[]) x "
                f"ON CONFLICT DO NOTHING RETURNING event_id) "
                f"UPDATE {t} SET n = {t}.n + 1 FROM fresh WHERE {t}.event_id = fresh.event_id",
                ids,
            )
        return []

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


@dataclass
class FaultRun:
    produced: int
    acked: int
    failed: int
    persisted: int
    lost_after_ack: int
    applied_twice: int
    redelivered: int
    unknown: int
    undelivered_at_close: int
    worst_wait_s: float
    longest_no_ack_s: float
    acks_while_down: int
    fault: dict[str, Any]
    down_s: float

    def summary(self) -> str:
        return (
            f"{self.fault.get('fault')} nodes={self.fault.get('nodes')}: produced {self.produced}, acked {self.acked}, "
            f"failed {self.failed}, persisted {self.persisted}, lost after ack {self.lost_after_ack}, "
            f"applied twice {self.applied_twice}, redelivered {self.redelivered}; producer stall: worst record "
            f"waited {self.worst_wait_s:.1f} s, no ack at all for {self.longest_no_ack_s:.1f} s"
        )


async def run_under_fault(
    cluster: LocalCluster,
    fault_factory: Any,
    database_url: str,
    table: str,
    pg: asyncpg.Connection,
    *,
    pre_s: float = 4.0,
    down_s: float = 12.0,
    post_s: float = 5.0,
) -> FaultRun:
    bootstrap = cluster.bootstrap
    spec = TopicSpec(f"test.fault.{uuid.uuid4().hex[:8]}", PARTITIONS, "driver_id", "fault test")
    ensure_topics(bootstrap, [spec, TopicSpec(spec.dlq, 1, "driver_id", "dlq")])
    await asyncio.to_thread(cluster.wait_in_sync, 60, [spec.name])
    fault = fault_factory(spec.name)
    ledger = AckLedger()
    producer = EventProducer(bootstrap, f"fault-{uuid.uuid4().hex[:6]}")
    dlq = EventProducer(bootstrap, f"fault-dlq-{uuid.uuid4().hex[:6]}")
    applier = BatchApplier(database_url, table)
    consumer = BatchConsumer(
        bootstrap=bootstrap,
        group_id=f"fault-{uuid.uuid4().hex[:6]}",
        topics=[spec.name],
        decoder=events.EventDecoder(events.DriverLocation),
        handler=applier,
        dlq_producer=dlq,
        name=f"fault-{spec.name[-8:]}",
        batch_max=500,
        batch_timeout_ms=100,
    )
    stop_consumer, stop_load = asyncio.Event(), asyncio.Event()
    consumer_task = asyncio.create_task(consumer.run(stop_consumer))
    async with asyncio.timeout(30):
        while not consumer.stats.partitions:
            await asyncio.sleep(0.1)

    async def load() -> None:
        start, k = time.monotonic(), 0
        while not stop_load.is_set():
            due = int(RATE * (time.monotonic() - start))
            while k < due:
                ping = events.DriverLocation(driver_id=f"f{k:07d}", seq=1, lat=57.7, lon=11.97)
                report = ledger.sent(ping.event_id)
                producer.produce(spec.name, events.encode(ping), key=ping.driver_id, on_delivery=report)
                k += 1
            await asyncio.sleep(0.01)

    load_task = asyncio.create_task(load())
    try:
        await asyncio.sleep(pre_s)
        injected = time.monotonic()
        info = await asyncio.to_thread(fault.inject)
        await asyncio.sleep(max(0.0, down_s - (time.monotonic() - injected)))
        repair_started = time.monotonic()
        await asyncio.to_thread(fault.repair)
        await asyncio.sleep(post_s)
        stop_load.set()
        await load_task
        undelivered = await asyncio.to_thread(producer.close, 120)
        count = f"SELECT count(*) FROM {table}"
        async with asyncio.timeout(90):
            while await pg.fetchval(count) < len(ledger.acked):
                await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # anything redelivered late is counted too
    finally:
        stop_load.set()
        stop_consumer.set()
        await asyncio.wait_for(consumer_task, 30)
        await applier.close()
        dlq.close(5)
        producer.close(1)
    rows = await pg.fetch(f"SELECT event_id, n, deliveries FROM {table}")
    persisted = {r["event_id"] for r in rows}
    return FaultRun(
        produced=ledger.produced,
        acked=len(ledger.acked),
        failed=len(ledger.failed),
        persisted=len(persisted),
        lost_after_ack=len(ledger.acked - persisted),
        applied_twice=sum(1 for r in rows if r["n"] != 1),
        redelivered=sum(1 for r in rows if r["deliveries"] > 1),
        unknown=len(persisted - set(ledger.sent_at)),
        undelivered_at_close=undelivered,
        worst_wait_s=round(ledger.worst_wait(), 2),
        longest_no_ack_s=round(ledger.longest_gap(injected - 1.0), 2),
        acks_while_down=ledger.acks_between(injected + 3.0, repair_started),
        fault=info,
        down_s=round(repair_started - injected, 1),
    )


def _check(run: FaultRun, record_property: Any) -> None:
    print(run.summary())
    record_property("fault_summary", run.summary())
    record_property("producer_stall_s", run.worst_wait_s)
    assert run.lost_after_ack == 0, run.summary()
    assert run.applied_twice == 0, run.summary()
    assert run.unknown == 0, run.summary()
    # Nothing vanished silently: every produced record ended acknowledged or failed visibly.
    assert run.undelivered_at_close == 0, run.summary()
    assert run.acked + run.failed == run.produced, run.summary()


@pytest.mark.parametrize("target", ["leader", "controller"])
async def test_kill_minus_9_of_one_broker_loses_no_acknowledged_record(
    target: str,
    healthy_cluster: LocalCluster,
    database_url: str,
    table: str,
    pg: asyncpg.Connection,
    record_property: Any,
) -> None:
    run = await run_under_fault(
        healthy_cluster,
        lambda topic: KillBrokers(healthy_cluster, topic, (target,)),
        database_url,
        table,
        pg,
    )
    _check(run, record_property)
    assert run.failed == 0, "one broker of three down: min.insync.replicas=2 still holds, nothing may fail"
    assert run.acked == run.produced


async def test_two_of_three_down_blocks_producers_and_loses_nothing_when_they_return(
    healthy_cluster: LocalCluster, database_url: str, table: str, pg: asyncpg.Connection, record_property: Any
) -> None:
    run = await run_under_fault(
        healthy_cluster,
        lambda topic: KillBrokers(healthy_cluster, topic, ("leader", "controller")),
        database_url,
        table,
        pg,
    )
    _check(run, record_property)
    assert len(run.fault["nodes"]) == 2
    # Below min.insync.replicas (and without a controller quorum) nothing is acknowledged...
    assert run.acks_while_down == 0, run.summary()
    # ...the producer holds what it was given and delivers it when the brokers return.
    assert run.worst_wait_s >= run.down_s - 4.0, run.summary()


async def test_network_partition_of_one_broker_loses_no_acknowledged_record(
    healthy_cluster: LocalCluster, database_url: str, table: str, pg: asyncpg.Connection, record_property: Any
) -> None:
    if healthy_cluster.net is None:
        pytest.skip("the session cluster is not in network namespaces (needs root and iproute2)")
    run = await run_under_fault(
        healthy_cluster,
        lambda topic: PartitionBroker(healthy_cluster, topic, "leader"),
        database_url,
        table,
        pg,
    )
    _check(run, record_property)
    assert run.failed == 0, run.summary()


async def test_cluster_restart_consumers_resume_from_committed_offsets(
    healthy_cluster: LocalCluster, database_url: str, table: str, pg: asyncpg.Connection, record_property: Any
) -> None:
    run = await run_under_fault(
        healthy_cluster, lambda _topic: RestartCluster(healthy_cluster), database_url, table, pg, down_s=3.0
    )
    _check(run, record_property)
    assert run.failed == 0, run.summary()
    # The consumer resumed from its committed offsets: at most the batches in flight came again,
    # never the whole topic (which a lost __consumer_offsets would replay from the start).
    assert run.redelivered < run.persisted // 4, run.summary()
