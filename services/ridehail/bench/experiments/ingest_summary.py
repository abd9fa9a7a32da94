"""Per arm and point: the spread (median, IQR) of the repeated runs of ``ridehail bench ingest``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ridehail.bench.experiments.stats import spread


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``summary[arm][point]``: spread of persisted/s, acknowledged/s, p50/p99 ms (``None`` where a
    percentile fell among the unanswered), CPU ms per 1k pings, client event-loop cores; the
    bottleneck named in each run, counted; and the accounting summed over the runs."""
    out: dict[str, Any] = {}
    for run in runs:
        out.setdefault(run["arm"], {}).setdefault(run["point"], []).append(run)
    summary: dict[str, Any] = {}
    for arm, points in out.items():
        summary[arm] = {}
        for point, rs in points.items():
            totals = Counter[str]()
            for r in rs:
                totals.update(r["accounting"])
            summary[arm][point] = {
                "offered_per_s": rs[0]["offered_per_s"],
                "persisted_per_s": spread(r["persisted_per_s"] for r in rs),
                "acknowledged_per_s": spread(r["acknowledged_per_s"] for r in rs),
                "p50_ms": spread(r["latency_ms"]["p50"] for r in rs),
                "p99_ms": spread(r["latency_ms"]["p99"] for r in rs),
                "ping_to_row_p50_ms": spread(r["ping_to_row_ms"]["p50"] for r in rs),
                "unanswered_share": spread(
                    r["latency_ms"]["unanswered"] / r["latency_ms"]["n"] if r["latency_ms"]["n"] else None for r in rs
                ),
                "cpu_ms_per_1k_pings": spread(r["cpu_ms_per_1k_pings"] for r in rs),
                "client_event_loop_cores": spread(r["client_cpu_cores"]["event_loop"] for r in rs),
                "bottleneck": dict(Counter(r["bottleneck"].split(" (")[0] for r in rs)),
                "accounting_total": dict(totals),
                "accounting_adds_up": all(
                    r["accounting"]["produced"] == r["accounting"]["persisted"] + r["accounting"]["lost"] for r in rs
                ),
            }
    return summary
