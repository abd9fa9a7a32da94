"""Exact accounting of what a producer was told: which records the cluster acknowledged (a
delivery report without error), which failed visibly, how long each acknowledged record waited
(the producer's stall as its worst record saw it) and the longest time without any
acknowledgement at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message


@dataclass
class AckLedger:
    sent_at: dict[str, float] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)
    ack_waits: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, key: str) -> Callable[[KafkaError | None, Message], None]:
        """Record that ``key`` was handed to the producer; returns its delivery callback."""
        self.sent_at[key] = time.monotonic()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            now = time.monotonic()
            with self._lock:
                if err is None:
                    self.acked.add(key)
                    self.failed.pop(key, None)
                    self.ack_times.append(now)
                    self.ack_waits.append(now - self.sent_at.get(key, now))
                else:
                    self.failed[key] = err.str()

        return on_delivery

    @property
    def produced(self) -> int:
        return len(self.sent_at)

    def acks_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t in self.ack_times if start <= t <= end)

    def longest_gap(self, start: float = 0.0, end: float = float("inf")) -> float:
        """Seconds of the longest stretch without any acknowledgement within [start, end]."""
        with self._lock:
            times = sorted(t for t in self.ack_times if start <= t <= end)
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def worst_wait(self) -> float:
        """Seconds the slowest acknowledged record waited from produce() to its acknowledgement."""
        with self._lock:
            return max(self.ack_waits, default=0.0)
