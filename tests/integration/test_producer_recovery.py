"""The embedded broker forgets everything on restart; an idempotent producer then dies with a fatal
UNKNOWN_PRODUCER_ID (or stalls). EventProducer must recreate itself and deliver again."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import KafkaException

from ridehail.common.broker import start_broker, stop_process
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.topics import ensure_topics

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


async def test_producer_delivers_again_after_a_broker_restart() -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port=port)
    topic = f"test.restart.{uuid.uuid4().hex[:6]}"
    from ridehail.domain.topics import TopicSpec

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
