"""Statistics every experiment reports the same way: repeated runs in an interleaved order,
median with the inter-quartile range, latency percentiles that count every unanswered request
(no censoring), and the resource that saturated first."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

MIN_REPEATS = 5
# A single-threaded Python process (one asyncio loop) cannot use more than one core; at 85 % of
# one core it is the bottleneck. The machine as a whole is at 85 % of all its cores.
SATURATED_CORE_SHARE = 0.85


def interleaved_schedule(arms: Sequence[str], repeats: int, seed: int = 1) -> list[tuple[int, str]]:
    """``(repeat, arm)`` pairs: every arm once per repeat, in a fresh random order each repeat, so
    a slow minute of the machine spreads over all arms instead of landing on one."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    rng = random.Random(seed)
    out: list[tuple[int, str]] = []
    for r in range(repeats):
        order = list(arms)
        rng.shuffle(order)
        out.extend((r, arm) for arm in order)
    return out


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """Median and inter-quartile range of repeated runs (``None`` values are runs without a value,
    counted in ``runs`` but not in the statistics, and reported as ``missing``)."""
    all_values = list(values)
    present = [float(v) for v in all_values if v is not None and not math.isnan(float(v))]
    if not present:
        return {
            "median": None,
            "iqr": None,
            "min": None,
            "max": None,
            "runs": len(all_values),
            "missing": len(all_values),
            "values": [],
        }
    data = np.asarray(present)
    p25, p50, p75 = (float(x) for x in np.percentile(data, [25, 50, 75]))
    return {
        "median": round(p50, 3),
        "iqr": [round(p25, 3), round(p75, 3)],
        "min": round(float(data.min()), 3),
        "max": round(float(data.max()), 3),
        "runs": len(all_values),
        "missing": len(all_values) - len(present),
        "values": [round(v, 3) for v in present],
    }


def uncensored_percentiles_ms(
    answered_s: Sequence[float] | np.ndarray, unanswered: int, qs: Sequence[float] = (50, 99)
) -> dict[str, Any]:
    """Latency percentiles over *every* request of a window: ``unanswered`` ones (timed out,
    dropped, refused, given up) count as infinitely slow. A percentile that falls among them is
    reported as ``None`` with ``beyond_timeout`` true: the honest answer is "more than the budget"."""
    answered = np.sort(np.asarray(answered_s, dtype="d"))
    total = len(answered) + max(0, unanswered)
    out: dict[str, Any] = {"n": total, "unanswered": max(0, unanswered)}
    for q in qs:
        key = f"p{q:g}"
        if total == 0:
            out[key] = None
            continue
        rank = q / 100 * (total - 1)  # numpy's default (linear) percentile position
        hi = math.ceil(rank)
        if hi >= len(answered):
            out[key] = None
            out[f"{key}_beyond_timeout"] = True
            continue
        lo = math.floor(rank)
        value = answered[lo] + (answered[hi] - answered[lo]) * (rank - lo)
        out[key] = round(float(value) * 1000, 2)
    return out


def bottleneck(cores_by_process: dict[str, float], single_threaded: Iterable[str], machine_cores: int) -> str:
    """Name the resource that saturated: a single-threaded process at >= 85 % of one core, else the
    machine at >= 85 % of all cores, else ``"none saturated (waiting: I/O, locks or the client)"``."""
    single = set(single_threaded)
    hot = sorted(
        ((c, name) for name, c in cores_by_process.items() if name in single and c >= SATURATED_CORE_SHARE),
        reverse=True,
    )
    if hot:
        return f"{hot[0][1]} CPU ({hot[0][0]:.2f} of its 1 core)"
    total = sum(cores_by_process.values())
    if total >= SATURATED_CORE_SHARE * machine_cores:
        top = max(cores_by_process.items(), key=lambda kv: kv[1])
        return f"machine CPU ({total:.2f} of {machine_cores} cores; largest {top[0]} {top[1]:.2f})"
    return "none saturated (waiting: I/O, locks or the client)"
