"""Helpers of ``ridehail bench matching``: random points in the dense city, percentiles, child processes."""

from __future__ import annotations

import os
import signal
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
