"""Where the acknowledged pings that never reached Postgres are: on the location topic (the
broker kept them, so the consumer side did not store them), on its dead-letter topic (refused,
with a reason), or on neither (the broker or the producer lost them). Read after a run, only
when an arm lost one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from ridehail.common.logging import get_logger

log = get_logger(__name__)


def keys_on_topic(bootstrap: str, topic: str, keys: Iterable[str], timeout_s: float = 30.0) -> set[str] | None:
    """Which of ``keys`` the topic holds, read from the start of every partition up to its end as
    it was when the read began; None if the topic could not be read to the end in ``timeout_s``."""
    wanted = {k.encode() for k in keys}
    if not wanted:
        return set()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"outage-trace-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )
    found: set[str] = set()
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            log.warning("outage_trace_failed", topic=topic, error=str(meta.error if meta else "no such topic"))
            return None
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                key = msg.key()
                if key is not None and key in wanted:
                    found.add(key.decode())
                p, offset = msg.partition(), msg.offset()
                if p in ends and offset is not None and offset + 1 >= ends[p]:
                    del ends[p]
        if ends:
            log.warning("outage_trace_incomplete", topic=topic, partitions_unread=sorted(ends))
            return None
        return found
    except KafkaException as exc:
        log.warning("outage_trace_failed", topic=topic, error=str(exc)[:200])
        return None
    finally:
        consumer.close()
