"""A broker restart under an idempotent producer, on both brokers.

* tansu forgets everything on restart; the idempotent producer then dies with a fatal
  UNKNOWN_PRODUCER_ID (or stalls). EventProducer must recreate itself and deliver again.
* the local Kafka cluster (every node stopped, then started): the same producer delivers again
  by itself, and every record acknowledged before the restart is still there afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from ridehail.cluster.cluster import LocalCluster
from ridehail.common.broker import start_broker, stop_process
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.topics import ensure_topics
from ridehail.domain.topics import TopicSpec

pytestmark = pytest.mark.integration


async def _send_until_delivered(producer: EventProducer, topic: str, timeout_s: float) -> int:
    attempts = 0
    async with asyncio.timeout(timeout_s):
        while True:
            attempts += 1
            try:
                await asyncio.wait_for(producer.send(topic, b"after-restart", key="k"), timeout=5)
                return attempts
            except (KafkaException, TimeoutError):
                await asyncio.sleep(0.5)


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out: list[bytes] = []
        positions = dict.fromkeys(highs, 0)
        for _ in range(400):
            if all(positions[p] >= highs[p] for p in highs):
                break
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m.value() or b"")
                positions[m.partition()] = m.offset() + 1
        return out
    finally:
        c.close()


async def test_producer_delivers_again_after_a_broker_restart() -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port=port)
    topic = f"test.restart.{uuid.uuid4().hex[:6]}"
    spec = [TopicSpec(topic, 2, "k", "test")]
    ensure_topics(bootstrap, spec)
    producer = EventProducer(bootstrap, "restart-test", **{"message.timeout.ms": 10000})
    try:
        for i in range(50):
            await producer.send(topic, f"before-{i}".encode(), key=str(i % 5))
        stop_process(broker)
        for i in range(20):  # produced while the broker is down: these may fail, never hang forever
            producer.produce(topic, f"during-{i}".encode(), key="k")
        broker = start_broker(port=port)
        ensure_topics(bootstrap, spec)  # what `ridehail up` does after restarting its broker
        attempts = await _send_until_delivered(producer, topic, timeout_s=60)
        assert attempts >= 1
        # And it keeps working.
        for i in range(20):
            await asyncio.wait_for(producer.send(topic, f"later-{i}".encode(), key="k"), timeout=10)
        assert producer.delivered >= 50 + 21
    finally:
        producer.close(2)
        stop_process(broker)


async def test_producer_delivers_again_after_a_cluster_restart_and_nothing_acknowledged_is_lost(
    healthy_cluster: LocalCluster,
) -> None:
    bootstrap = healthy_cluster.bootstrap
    topic = f"test.restart.{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, [TopicSpec(topic, 3, "k", "test")])
    producer = EventProducer(bootstrap, "cluster-restart-test")
    try:
        for i in range(50):
            await producer.send(topic, f"before-{i}".encode(), key=str(i % 5))
        await asyncio.to_thread(healthy_cluster.stop)
        for i in range(20):  # produced while every node is down: held by the producer
            producer.produce(topic, f"during-{i}".encode(), key="k")
        await asyncio.to_thread(healthy_cluster.restart)
        await _send_until_delivered(producer, topic, timeout_s=90)
        for i in range(20):
            await asyncio.wait_for(producer.send(topic, f"later-{i}".encode(), key="k"), timeout=30)
        assert producer.close(30) == 0
        values = await asyncio.to_thread(_read_all, bootstrap, topic, 3)
        for i in range(50):  # durable: what was acknowledged before the restart survived it
            assert f"before-{i}".encode() in values
        for i in range(20):  # the records held during the outage were delivered after it, once each
            assert values.count(f"during-{i}".encode()) == 1
        assert values.count(b"after-restart") >= 1
    finally:
        producer.close(2)


def test_replacing_the_client_reports_every_message_it_held(broker: str) -> None:
    """A client replaced while it holds queued and in-flight messages (what a fatal error or a
    stall does) purges them and produces them again on the new client: every message ends with
    exactly one delivery report, none vanishes without one."""
    topic = f"test.replace.{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 3, "k", "replacement test")])
    producer = EventProducer(broker, f"test-replace-{uuid.uuid4().hex[:6]}", **{"linger.ms": 50})
    reports: dict[bytes, int] = {}
    errors: list[str] = []

    def report(err: object, msg: object) -> None:
        value = msg.value()  # type: ignore[attr-defined]
        reports[value] = reports.get(value, 0) + 1
        if err is not None:
            errors.append(str(err))

    sent = [f"m{i}".encode() for i in range(20_000)]
    for value in sent:
        producer.produce(topic, value, key=value[-1:], on_delivery=report)
    producer._recreate(producer._producer, "test: replaced while holding messages")
    assert producer.close(60) == 0
    assert errors == []
    assert set(reports) == set(sent), f"{len(set(sent) - set(reports))} messages got no delivery report"
    assert max(reports.values()) == 1
    assert _read_values(broker, topic, 3, set(sent)) == set(sent)


def test_a_produce_waiting_while_the_client_is_replaced_goes_to_the_new_client(broker: str) -> None:
    """Producing from one thread while another replaces the client again and again: a produce call
    that waited for the replacement must not land on the old client (nobody polls it any more, so
    its message would never report): every message ends with exactly one delivery report."""
    topic = f"test.replace-race.{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 3, "k", "replacement race test")])
    producer = EventProducer(broker, f"test-race-{uuid.uuid4().hex[:6]}", **{"linger.ms": 20})
    reports: dict[bytes, int] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def report(err: object, msg: object) -> None:
        with lock:
            value = msg.value()  # type: ignore[attr-defined]
            reports[value] = reports.get(value, 0) + 1
            if err is not None:
                errors.append(str(err))

    sent = [f"r{i}".encode() for i in range(30_000)]
    done = threading.Event()

    def load() -> None:
        for value in sent:
            producer.produce(topic, value, key=value[-1:], on_delivery=report)
        done.set()

    loader = threading.Thread(target=load)
    loader.start()
    replacements = 0
    while not done.is_set() and replacements < 30:
        producer._recreate(producer._producer, "test: replaced under load")
        replacements += 1
        time.sleep(0.02)
    loader.join(120)
    assert replacements >= 3, "the load finished before the client was replaced a few times"
    assert producer.close(60) == 0
    assert errors == []
    missing = set(sent) - set(reports)
    assert not missing, f"{len(missing)} messages got no delivery report after {replacements} replacements"
    assert max(reports.values()) == 1


def test_flush_follows_the_client_that_replaced_the_one_it_waited_on() -> None:
    """A flush (``close`` flushes) that waits while the client is replaced must go on waiting on
    the new client, which now holds the messages: it must not report "nothing left" because the
    replaced client is empty. No broker listens on the port, so nothing can be delivered."""
    producer = EventProducer(f"127.0.0.1:{free_port()}", f"test-flush-{uuid.uuid4().hex[:6]}")
    try:
        for i in range(500):
            producer.produce("test.flush.unreachable", f"u{i}".encode(), key="k")
        replacer = threading.Timer(0.5, lambda: producer._recreate(producer._producer, "test: replaced during flush"))
        replacer.start()
        started = time.monotonic()
        left = producer.flush(3.0)
        replacer.join()
        assert producer.requeued == 500, "the replacement did not move the held messages to the new client"
        assert left == 500, f"flush reported {left} left while the new client holds 500"
        assert time.monotonic() - started >= 2.5, "flush returned early instead of waiting on the new client"
    finally:
        producer.close(0.5)


def _read_values(bootstrap: str, topic: str, partitions: int, wanted: set[bytes], timeout_s: float = 60) -> set[bytes]:
    """The values of ``topic`` read from the beginning, until all of ``wanted`` arrived (or the time-out)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False})
    seen: set[bytes] = set()
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while not wanted <= seen and time.monotonic() < deadline:
            seen.update(m.value() or b"" for m in c.consume(5000, 0.5) if m.error() is None)
        return seen
    finally:
        c.close()
