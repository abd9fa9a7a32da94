"""What a replay is asked to do and what it reports: options (speed, topics, time range), the
parsers behind the CLI flags, progress and the result."""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ridehail.replay.fileformat import SkipReport
from ridehail.replay.recorder import parse_duration

REPLAY_HEADER_VALUE = b"1"

_TS_FIELD = re.compile(rb'"ts"\s*:\s*-?\d+')


def rewrite_event_ts(value: bytes | None, ts_ms: int) -> bytes | None:
    """Set the top-level ``ts`` of a JSON object to ``ts_ms``; anything else is returned as is."""
    if not value or value[:1] != b"{":
        return value
    m = _TS_FIELD.search(value)
    if m is None or value.find(b"{", 1, m.start()) != -1:  # absent, or inside a nested object
        return value
    return b'%s"ts":%d%s' % (value[: m.start()], ts_ms, value[m.end() :])


def parse_speed(text: str) -> float | None:
    """``1``, ``10``, ``10x``, ``0.5`` -> factor; ``max`` -> None (as fast as possible)."""
    t = text.strip().lower()
    if t in ("max", "inf", "0"):
        return None
    t = t.removesuffix("x")
    try:
        speed = float(t)
    except ValueError:
        raise ValueError(f"not a speed: {text!r} (examples: 1, 10, 0.5, max)") from None
    if not speed > 0:
        raise ValueError(f"speed must be positive or 'max', got {text!r}")
    return speed


@dataclass(frozen=True, slots=True)
class TimeBound:
    """A ``--from``/``--to`` bound: ms after the recording's first record, or an absolute epoch ms."""

    ms: int
    relative: bool

    def resolve(self, first_ts: int) -> int:
        return first_ts + self.ms if self.relative else self.ms


def parse_time_bound(text: str) -> TimeBound:
    """``90s``/``+1m30s``/``2m`` (after the start), ``2026-11-26T21:00:00Z`` or epoch milliseconds."""
    t = text.strip()
    if re.fullmatch(r"\d{11,}", t):
        return TimeBound(int(t), relative=False)
    if "T" in t or re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", t):
        try:
            dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {text!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return TimeBound(int(dt.timestamp() * 1000), relative=False)
    try:
        return TimeBound(int(parse_duration(t.removeprefix("+")) * 1000), relative=True)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (offset from the recording's start like 90s or 2m, "
            "an ISO time like 2026-11-26T21:00:00Z, or epoch milliseconds)"
        ) from None


def parse_topic_map(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        for item in pair.split(","):
            if not item.strip():
                continue
            src, sep, dst = item.partition("=")
            if not sep or not src.strip() or not dst.strip():
                raise ValueError(f"--topic-map wants SOURCE=TARGET, got {item!r}")
            out[src.strip()] = dst.strip()
    return out


class ReplayError(RuntimeError):
    """The replay could not start or had to stop; the message says how far it got."""

    def __init__(self, message: str, *, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass
class ReplayOptions:
    speed: float | None = 1.0
    loop: bool = False
    max_passes: int | None = None  # with loop: stop after this many passes (None: until stopped)
    topics: list[str] | None = None
    topic_map: dict[str, str] = field(default_factory=dict)
    time_from: TimeBound | None = None
    time_to: TimeBound | None = None
    keep_timestamps: bool = False
    skip_bad: bool = False
    check_only: bool = False
    collect_timing: bool = False
    client_id: str = "ridehail-replay"


@dataclass
class ReplayProgress:
    bytes_read: int
    file_size: int
    records_sent: int
    records_total: int | None
    rate_per_s: float
    behind_ms: float
    max_behind_ms: float
    position_s: float  # recording time of the last sent record, seconds after the first one
    passes: int


@dataclass
class ReplayResult:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    filtered_out: int = 0
    passes: int = 0
    elapsed_s: float = 0.0
    max_behind_ms: float = 0.0
    skipped: SkipReport = field(default_factory=SkipReport)
    per_topic: dict[str, int] = field(default_factory=dict)
    lateness_ms: array[float] = field(default_factory=lambda: array("d"))
    first_error: str | None = None
    stopped: bool = False

    @property
    def rate_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": self.failed,
            "filtered_out": self.filtered_out,
            "passes": self.passes,
            "seconds": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate_per_s, 1),
            "max_behind_ms": round(self.max_behind_ms, 2),
            "skipped": self.skipped.summary(),
            "per_topic": self.per_topic,
            "stopped": self.stopped,
        }
