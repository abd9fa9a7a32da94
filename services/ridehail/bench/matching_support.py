"""Helpers of ``ridehail bench matching``: random points in the dense city, percentiles, child processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from ridehail.harness.services import matching_stats, wait_until

WARMUP_REQUESTS = 5
# The dense part of the city (the road graph covers it; the bbox corners are sea and forest).
CITY = (57.675, 11.92, 57.735, 12.02)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def random_points(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack((rng.uniform(CITY[0], CITY[2], n), rng.uniform(CITY[1], CITY[3], n)))


def stop_group(proc: Any) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def wait_joined(port: int, timeout_s: float = 90) -> None:
    async def joined() -> bool:
        stats = await matching_stats(port)
        return bool(stats and stats["partitions"]["locations"] and stats["partitions"]["rides"])

    if not await wait_until(joined, timeout_s):
        raise RuntimeError("matching did not join its consumer groups")


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) ``pid`` has used so far; None off Linux or when
    the process is not on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(word: str) -> list[int]:
    """This process's children whose command line contains ``word`` (Linux; else empty)."""
    me = os.getpid()
    out: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and word in cmdline:
            out.append(int(entry.name))
    return out


class CpuMeter:
    """CPU seconds used by named processes between :meth:`start` and :meth:`stop`. Processes that
    appear later (a pool's new Postgres backend) count from zero; unreadable ones are left out."""

    def __init__(self) -> None:
        self._start: dict[str, dict[int, float]] = {}

    def start(self, groups: dict[str, list[int]]) -> None:
        self._start = {
            name: {p: c for p in pids if (c := process_cpu_s(p)) is not None} for name, pids in groups.items()
        }

    def stop(self, groups: dict[str, list[int]]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pids in groups.items():
            before = self._start.get(name, {})
            used = [(c - before.get(p, 0.0)) for p in pids if (c := process_cpu_s(p)) is not None]
            out[name] = round(sum(used), 2) if used else None
        return out
