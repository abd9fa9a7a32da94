"""Replay a ``.rhrec`` recording into Kafka with its original spacing, scaled by a speed factor.

* Order: records go out in file order from one idempotent producer, to their original partition
  when the target topic has it (else by key), so the order within a partition, and so within a
  key, is the recorded one.
* Keys and headers are kept; every replayed record gets the header ``ridehail-replay: 1``.
* Timestamps: by default the Kafka timestamp is "now" and the JSON event's top-level ``ts`` field
  is rewritten to the moment of sending (the map measures GPS-to-browser latency from ``ts``);
  ``keep_timestamps`` keeps both as recorded.
* Pacing: record *i* is sent at ``start + (ts_i - ts_0) / speed``; ``speed=None`` sends as fast as
  the producer takes them. How far behind schedule the sender is gets reported.
* Time range: by record timestamps in the file, never the broker's offsets-for-times.
* Errors: a bad file stops the replay with the position of the problem and how far it got
  (everything before it was sent and acknowledged); ``skip_bad`` skips and counts instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from ridehail.common.kafka import producer_config
from ridehail.common.logging import get_logger
from ridehail.domain.topics import REPLAY_HEADER
from ridehail.replay.fileformat import FrameHeader, RecordingError, SkipReport
from ridehail.replay.recording_reader import RecordingReader, read_trailer
from ridehail.replay.replay_options import (
    REPLAY_HEADER_VALUE,
    ReplayError,
    ReplayOptions,
    ReplayProgress,
    ReplayResult,
    rewrite_event_ts,
)

log = get_logger(__name__)


class Replayer:
    def __init__(
        self,
        path: str | Path,
        bootstrap: str,
        options: ReplayOptions | None = None,
        on_progress: Callable[[ReplayProgress], None] | None = None,
    ) -> None:
        self.path = str(path)
        self.bootstrap = bootstrap
        self.options = options or ReplayOptions()
        self.on_progress = on_progress
        self.result = ReplayResult()
        self._lock = threading.Lock()

    # -- set-up ----------------------------------------------------------------------------------------
    def _targets(self, reader: RecordingReader) -> list[str | None]:
        """Target topic per recorded topic index (None: not replayed)."""
        names = reader.header.topic_names()
        opts = self.options
        chosen = opts.topics or names
        unknown = [t for t in chosen if t not in names]
        if unknown:
            raise ReplayError(
                f"topic(s) {', '.join(unknown)} not in the recording {self.path} (it holds: {', '.join(names)})"
            )
        unmapped = [t for t in opts.topic_map if t not in names]
        if unmapped:
            raise ReplayError(
                f"--topic-map source(s) {', '.join(unmapped)} not in the recording (it holds: {', '.join(names)})"
            )
        return [opts.topic_map.get(n, n) if n in chosen else None for n in names]

    def _producer(self) -> Producer:
        return Producer(
            producer_config(
                self.bootstrap,
                self.options.client_id,
                **{
                    "linger.ms": 5 if self.options.speed is not None else 20,
                    "batch.size": 1_000_000,
                    # Only failures get a delivery report: successes are counted as sent - failed.
                    "delivery.report.only.error": True,
                },
            )
        )

    def _partition_counts(self, producer: Producer, targets: list[str | None]) -> dict[str, int]:
        try:
            md = producer.list_topics(timeout=10)
        except Exception as exc:
            raise ReplayError(f"broker at {self.bootstrap} unreachable: {exc}; nothing was sent") from None
        counts: dict[str, int] = {}
        for t in {t for t in targets if t}:
            tmd = md.topics.get(t)
            if tmd is None or tmd.error is not None or not tmd.partitions:
                raise ReplayError(
                    f"topic {t!r} does not exist on {self.bootstrap}: create it (`ridehail topics ensure`) "
                    "or map it elsewhere with --topic-map SOURCE=TARGET; nothing was sent"
                )
            counts[t] = len(tmd.partitions)
        return counts

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.result.failed += 1
            if self.result.first_error is None:
                self.result.first_error = err.str()

    # -- run -------------------------------------------------------------------------------------------
    def check(self) -> ReplayResult:
        """Read the whole file (no broker): counts what would be replayed, raises on bad input."""
        with RecordingReader(self.path, skip_bad=self.options.skip_bad) as reader:
            targets = self._targets(reader)
            names = reader.header.topic_names()
            bounds: tuple[int, int] | None = None
            for frame in reader.frames():
                for rec in frame.records:
                    if bounds is None:
                        bounds = self._bounds(frame.header.first_ts)
                    if targets[rec.topic] is None or not bounds[0] <= rec.timestamp <= bounds[1]:
                        self.result.filtered_out += 1
                        continue
                    self.result.sent += 1
                    self.result.per_topic[names[rec.topic]] = self.result.per_topic.get(names[rec.topic], 0) + 1
            self.result.skipped = reader.skipped
        self.result.passes = 1
        return self.result

    def _bounds(self, first_ts: int) -> tuple[int, int]:
        lo = self.options.time_from.resolve(first_ts) if self.options.time_from else -(2**63)
        hi = self.options.time_to.resolve(first_ts) if self.options.time_to else 2**63 - 1
        return lo, hi

    def run(self, stop: threading.Event | None = None) -> ReplayResult:
        stop = stop or threading.Event()
        opts = self.options
        if opts.check_only:
            return self.check()
        with RecordingReader(self.path) as probe:  # header problems surface before any connection
            targets = self._targets(probe)
        trailer = read_trailer(self.path)
        total = (
            int(trailer["records"])
            if trailer and opts.topics is None and not (opts.time_from or opts.time_to)
            else None
        )
        producer = self._producer()
        counts = self._partition_counts(producer, targets)
        started = time.perf_counter()
        try:
            while not stop.is_set():
                self._one_pass(producer, targets, counts, stop, started, total)
                self.result.passes += 1
                if not opts.loop or (opts.max_passes is not None and self.result.passes >= opts.max_passes):
                    break
        except RecordingError as exc:
            self._finish(producer, started)
            raise ReplayError(
                f"{exc}\n{self.result.sent} record(s) were sent before this point "
                f"({self.result.delivered} acknowledged); nothing after it was sent. "
                "--skip-bad replays the valid rest.",
                sent=self.result.sent,
            ) from None
        self.result.stopped = stop.is_set()
        self._finish(producer, started)
        return self.result

    def _finish(self, producer: Producer, started: float) -> None:
        remaining = producer.flush(30)
        self.result.elapsed_s = time.perf_counter() - started
        if remaining:
            self.result.failed += remaining
            self.result.first_error = self.result.first_error or f"{remaining} record(s) not acknowledged within 30 s"
        self.result.delivered = self.result.sent - self.result.failed

    def _one_pass(
        self,
        producer: Producer,
        targets: list[str | None],
        counts: dict[str, int],
        stop: threading.Event,
        started: float,
        total: int | None,
    ) -> None:
        opts = self.options
        result = self.result
        reader = RecordingReader(self.path, skip_bad=opts.skip_bad)
        names = reader.header.topic_names()
        keep_partition = [
            t is not None and counts[t] >= info.partitions
            for t, info in zip(targets, reader.header.topics, strict=True)
        ]
        per_topic = [0] * len(names)
        on_delivery = self._on_delivery
        produce = producer.produce
        poll = producer.poll
        perf = time.perf_counter
        speed = opts.speed
        paced = speed is not None
        keep_ts = opts.keep_timestamps
        timing = result.lateness_ms if opts.collect_timing else None
        bounds: tuple[int, int] | None = None
        base_ts: int | None = None
        t0 = 0.0
        last_due = 0.0
        last_ts = 0
        behind_ms = 0.0
        next_report = perf() + 0.2
        report = self.on_progress is not None
        now_ms = int(time.time() * 1000)
        marker: tuple[str, bytes | None] = (REPLAY_HEADER, REPLAY_HEADER_VALUE)
        marker_only: list[tuple[str, bytes | None]] = [
            marker
        ]  # the client copies headers, so one list serves every record

        def want(fh: FrameHeader) -> bool:
            if bounds is None or (opts.time_from is None and opts.time_to is None):
                return True
            return fh.last_ts >= bounds[0] and fh.first_ts <= bounds[1]

        try:
            for frame in reader.frames(want):
                if bounds is None:
                    bounds = self._bounds(frame.header.first_ts)
                lo, hi = bounds
                for i, rec in enumerate(frame.records):
                    target = targets[rec.topic]
                    ts = rec.timestamp
                    if target is None or ts < lo or ts > hi:
                        result.filtered_out += 1
                        continue
                    if base_ts is None:
                        base_ts, t0 = ts, perf()
                    if paced:
                        # A record older than the one before it (it reached the recorder late) is due
                        # at once: file order wins, and lateness measures the sender, not the file.
                        due = t0 + (ts - base_ts) / (1000.0 * (speed or 1.0))
                        if due < last_due:
                            due = last_due
                        last_due = due
                        now = perf()
                        while now < due:
                            if stop.is_set():
                                return
                            if report and now >= next_report:
                                next_report = now + 0.2
                                self._report(reader, total, started, behind_ms, last_ts - base_ts)
                            wait = due - now
                            if wait > 0.002:
                                poll(min(wait - 0.001, 0.05))
                            else:
                                time.sleep(wait)
                            now = perf()
                        behind_ms = (now - due) * 1000.0
                        if timing is not None:
                            timing.append(behind_ms)
                        if behind_ms > result.max_behind_ms:
                            result.max_behind_ms = behind_ms
                        now_ms = int(time.time() * 1000)
                        if report and now >= next_report:
                            next_report = now + 0.2
                            self._report(reader, total, started, behind_ms, last_ts - base_ts)
                    elif (i & 1023) == 0:
                        now_ms = int(time.time() * 1000)
                        poll(0)
                        if stop.is_set():
                            return
                        if report and perf() >= next_report:
                            next_report = perf() + 0.2
                            self._report(reader, total, started, behind_ms, last_ts - base_ts)
                    headers: list[tuple[str, bytes | None]]
                    if rec.headers:
                        headers = [h for h in rec.headers if h[0] != REPLAY_HEADER]
                        headers.append(marker)
                    else:
                        headers = marker_only
                    value = rec.value if keep_ts else rewrite_event_ts(rec.value, now_ms)
                    partition = rec.partition if keep_partition[rec.topic] else -1
                    while True:
                        try:
                            produce(
                                target,
                                value,
                                rec.key,
                                partition,
                                on_delivery=on_delivery,
                                timestamp=ts if keep_ts else 0,
                                headers=headers,  # type: ignore[arg-type]  # the stub lacks bytes | None
                            )
                            break
                        except BufferError:
                            poll(0.05)
                    result.sent += 1
                    per_topic[rec.topic] += 1
                    last_ts = ts
        finally:
            result.skipped = _merge_skips(result.skipped, reader.skipped)
            for idx, n in enumerate(per_topic):
                if n:
                    result.per_topic[names[idx]] = result.per_topic.get(names[idx], 0) + n
            if self.on_progress is not None:
                self._report(reader, total, started, behind_ms, last_ts - (base_ts or last_ts))
            reader.close()

    def _report(
        self, reader: RecordingReader, total: int | None, started: float, behind_ms: float, pos_ms: int
    ) -> None:
        assert self.on_progress is not None
        elapsed = time.perf_counter() - started
        self.on_progress(
            ReplayProgress(
                bytes_read=reader.position,
                file_size=reader.size,
                records_sent=self.result.sent,
                records_total=total,
                rate_per_s=self.result.sent / elapsed if elapsed > 0 else 0.0,
                behind_ms=behind_ms,
                max_behind_ms=self.result.max_behind_ms,
                position_s=pos_ms / 1000.0,
                passes=self.result.passes,
            )
        )


def _merge_skips(a: SkipReport, b: SkipReport) -> SkipReport:
    return SkipReport(
        frames=a.frames + b.frames,
        records=a.records + b.records,
        records_unknown=a.records_unknown or b.records_unknown,
        bytes=a.bytes + b.bytes,
        problems=a.problems + b.problems,
    )
