"""Record Kafka topics into a ``.rhrec`` file (see :mod:`ridehail.replay.fileformat`).

The recorder assigns itself every partition of the chosen topics (no consumer group join, no
committed offsets: recording never disturbs the services), keeps either what is produced from now
on (a cut by record timestamp: the embedded broker's "latest offset" is wrong) or everything,
and writes records merged across partitions in timestamp order through a short reorder window.
Each partition's own order (so each key's order) is kept exactly.
A frame is written at least every second, so Ctrl-C or a crash loses at most the last second, and
a clean stop writes the rest plus a trailer.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from ridehail.common.kafka import consumer_config, message_headers
from ridehail.common.logging import get_logger
from ridehail.replay.fileformat import TopicInfo
from ridehail.replay.recording_writer import RecordingWriter

log = get_logger(__name__)

StoredRecord = tuple[int, int, int, int, bytes | None, list[tuple[str, bytes | None]] | None, bytes | None]

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*(?:(\d+(?:\.\d+)?)s)?\s*(?:(\d+)ms)?\s*$"
)


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1m30s``, ``1h``, ``250ms``; ValueError otherwise."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    m = _DURATION.match(text)
    if not text or not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 5m, 1m30s, 1h, 250ms)")
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


class RecordError(RuntimeError):
    """Recording cannot start (broker unreachable, topic missing)."""


@dataclass
class RecordProgress:
    records: int
    bytes_written: int
    elapsed_s: float
    rate_per_s: float
    buffered: int
    per_topic: dict[str, int]


@dataclass
class RecordResult:
    path: str
    records: int
    frames: int
    bytes_written: int
    elapsed_s: float
    ended: str
    per_topic: dict[str, int] = field(default_factory=dict)


class Recorder:
    def __init__(
        self,
        bootstrap: str,
        out: str | Path,
        topics: Sequence[str],
        *,
        from_beginning: bool = False,
        codec: str | None = None,
        level: int | None = None,
        reorder_window_ms: int = 1000,
        metadata_timeout_s: float = 10.0,
    ) -> None:
        if not topics:
            raise RecordError("no topics to record")
        self.bootstrap = bootstrap
        self.out = str(out)
        self.topics = list(dict.fromkeys(topics))
        self.from_beginning = from_beginning
        self.codec = codec
        self.level = level
        self.window_ms = reorder_window_ms
        self.metadata_timeout_s = metadata_timeout_s
        self._queues: dict[tuple[int, int], deque[StoredRecord]] = {}
        self._max_ts = 0
        self.per_topic = dict.fromkeys(self.topics, 0)
        self._not_before_ms = 0

    # -- setup -----------------------------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        conf = consumer_config(
            self.bootstrap,
            f"ridehail-recorder-{uuid.uuid4().hex[:8]}",
            "ridehail-recorder",
            **{
                "enable.auto.commit": False,
                "statistics.interval.ms": 0,
                "fetch.wait.max.ms": 20,
            },
        )
        return Consumer(conf)

    def _topic_infos(self, consumer: Consumer) -> list[TopicInfo]:
        try:
            md = consumer.list_topics(timeout=self.metadata_timeout_s)
        except Exception as exc:
            raise RecordError(f"broker at {self.bootstrap} unreachable: {exc}") from None
        infos = []
        for name in self.topics:
            tmd = md.topics.get(name)
            if tmd is None or tmd.error is not None or not tmd.partitions:
                have = sorted(t for t in md.topics if not t.startswith("__"))
                raise RecordError(f"topic {name!r} does not exist on {self.bootstrap} (it has: {', '.join(have)})")
            infos.append(TopicInfo(name, len(tmd.partitions)))
        return infos

    # -- merge window ----------------------------------------------------------------------------------
    def _enqueue(self, rec: StoredRecord) -> None:
        key = (rec[0], rec[1])
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
        q.append(rec)
        if rec[3] > self._max_ts:
            self._max_ts = rec[3]

    def _release(self, writer: RecordingWriter, upto_ts: int | None) -> None:
        """Write queued records with timestamp <= upto_ts (all when None), merged by timestamp."""
        heap = [(q[0][3], key) for key, q in self._queues.items() if q]
        heapq.heapify(heap)
        add = writer.add
        while heap:
            ts, key = heap[0]
            if upto_ts is not None and ts > upto_ts:
                break
            q = self._queues[key]
            rec = q.popleft()
            add(*rec)
            if q:
                heapq.heapreplace(heap, (q[0][3], key))
            else:
                heapq.heappop(heap)

    # -- run -------------------------------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event,
        *,
        duration_s: float | None = None,
        idle_timeout_s: float | None = None,
        max_records: int | None = None,
        on_progress: Callable[[RecordProgress], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> RecordResult:
        consumer = self._consumer()
        try:
            infos = self._topic_infos(consumer)
            # Always read from the beginning: the embedded broker answers "latest offset" wrongly
            # (it hands back old records), so "from now on" is a record-timestamp cut instead.
            self._not_before_ms = 0 if self.from_beginning else int(time.time() * 1000)
            assignment = [TopicPartition(t.name, p, OFFSET_BEGINNING) for t in infos for p in range(t.partitions)]
            consumer.assign(assignment)
            writer = RecordingWriter(
                self.out,
                infos,
                codec=self.codec,
                level=self.level,
                source={
                    "bootstrap": self.bootstrap,
                    "from_beginning": self.from_beginning,
                    "started_at_ms": int(time.time() * 1000),
                    "not_before_ms": self._not_before_ms,
                },
            )
            return self._loop(
                consumer, writer, infos, stop, duration_s, idle_timeout_s, max_records, on_progress, on_ready
            )
        finally:
            consumer.close()

    def _loop(
        self,
        consumer: Consumer,
        writer: RecordingWriter,
        infos: list[TopicInfo],
        stop: threading.Event,
        duration_s: float | None,
        idle_timeout_s: float | None,
        max_records: int | None,
        on_progress: Callable[[RecordProgress], None] | None,
        on_ready: Callable[[], None] | None,
    ) -> RecordResult:
        index = {t.name: i for i, t in enumerate(infos)}
        started = time.monotonic()
        last_record_at = started
        last_flush = started
        last_progress = 0.0
        consumed = 0
        ended = "error"
        log.info("recording_started", out=self.out, topics=self.topics, from_beginning=self.from_beginning)
        ready_sent = False
        not_before = self._not_before_ms
        skipped_old = 0
        try:
            while True:
                now = time.monotonic()
                if stop.is_set():
                    ended = "interrupted"
                    break
                if duration_s is not None and now - started >= duration_s:
                    ended = "duration"
                    break
                if idle_timeout_s is not None and now - last_record_at >= idle_timeout_s:
                    ended = "idle"
                    break
                if max_records is not None and consumed >= max_records:
                    ended = "max_records"
                    break
                messages = consumer.consume(10000, 0.1)
                if not ready_sent:
                    # The first consume call has fetched the start offsets: from here on every
                    # produced record is captured (a caller may now start producing).
                    ready_sent = True
                    if on_ready is not None:
                        on_ready()
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("record_consume_error", error=err.str())
                        continue
                    ts_type, ts = msg.timestamp()
                    if ts_type == TIMESTAMP_NOT_AVAILABLE or ts < 0:
                        ts = int(time.time() * 1000)
                    elif ts < not_before:
                        skipped_old += 1
                        continue
                    topic = msg.topic() or ""
                    self._enqueue(
                        (
                            index[topic],
                            msg.partition() or 0,
                            msg.offset() or 0,
                            ts,
                            msg.key(),
                            message_headers(msg) or None,
                            msg.value(),
                        )
                    )
                    self.per_topic[topic] += 1
                    consumed += 1
                if messages:
                    last_record_at = time.monotonic()
                now = time.monotonic()
                if now - last_flush >= 1.0:
                    # held back at most one window: by the newest record seen, or by the clock when idle
                    self._release(writer, max(self._max_ts, int(time.time() * 1000)) - self.window_ms)
                    writer.flush()
                    last_flush = now
                if on_progress is not None and now - last_progress >= 0.25:
                    last_progress = now
                    elapsed = now - started
                    on_progress(
                        RecordProgress(
                            records=consumed,
                            bytes_written=writer.bytes_written,
                            elapsed_s=elapsed,
                            rate_per_s=consumed / elapsed if elapsed > 0 else 0.0,
                            buffered=consumed - writer.records,
                            per_topic=dict(self.per_topic),
                        )
                    )
        except KeyboardInterrupt:
            ended = "interrupted"
            raise
        finally:
            self._release(writer, None)
            writer.close(ended=ended, per_topic=dict(self.per_topic))
            log.info("recording_closed", out=self.out, records=writer.records, ended=ended, older_skipped=skipped_old)
        elapsed = time.monotonic() - started
        return RecordResult(
            path=self.out,
            records=writer.records,
            frames=writer.frames,
            bytes_written=writer.bytes_written,
            elapsed_s=elapsed,
            ended=ended,
            per_topic=dict(self.per_topic),
        )


def describe(result: RecordResult) -> dict[str, Any]:
    return {
        "path": result.path,
        "records": result.records,
        "frames": result.frames,
        "bytes": result.bytes_written,
        "seconds": round(result.elapsed_s, 3),
        "ended": result.ended,
        "per_topic": result.per_topic,
    }
