"""What the machine did while a benchmark ran, beyond its load average: the share of CPU time the
hypervisor gave to other guests (``steal``), read from ``/proc/stat``. On a shared VM a run with
a high steal share is slower for reasons outside the code under test. And how fast one core ran
a fixed piece of Python just before (:func:`speed_probe_ms`): one reading, which did not follow
the stack's CPU in the runs of 2026-12-03 (docs/performance.md), so a hint, not a correction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The machine-wide ``cpu`` line of ``/proc/stat`` (clock ticks since boot)."""

    total: int
    idle: int
    steal: int

    @classmethod
    def parse(cls, text: str) -> CpuTimes:
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                ticks = [int(x) for x in fields[1:]]
                # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
                # already counted in user and nice, so only the first eight add up to the total.
                ticks += [0] * (8 - len(ticks))
                return cls(total=sum(ticks[:8]), idle=ticks[3] + ticks[4], steal=ticks[7])
        raise ValueError("no aggregate cpu line in /proc/stat")

    @classmethod
    def read(cls, path: Path = PROC_STAT) -> CpuTimes | None:
        """Now, or None where ``/proc/stat`` cannot be read (not Linux)."""
        try:
            return cls.parse(path.read_text())
        except (OSError, ValueError):
            return None


def cpu_shares(start: CpuTimes | None, end: CpuTimes | None) -> dict[str, float]:
    """Shares of all CPU time between ``start`` and ``end``: ``busy`` (this guest's work),
    ``steal`` (taken by the hypervisor for others); empty when either reading is missing."""
    if start is None or end is None or end.total <= start.total:
        return {}
    span = end.total - start.total
    idle = end.idle - start.idle
    steal = end.steal - start.steal
    return {
        "cpu_busy_share": round((span - idle - steal) / span, 3),
        "cpu_steal_share": round(steal / span, 3),
    }


PROBE_LOOPS = 2_000_000


def speed_probe_ms(repeats: int = 3) -> float:
    """Milliseconds one core takes for a fixed pure-Python loop, the best of ``repeats``: lower
    is a faster machine at that moment (on a shared VM it changes through the day). Run it
    while the machine is otherwise idle, e.g. before a benchmark starts its processes."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(PROBE_LOOPS):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)
