"""The ``summary`` of ``ridehail bench outage``: per broker, scenario and arm, the spread (median,
IQR, min, max, every value) over the repeats of each headline number."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ridehail.bench.experiments.stats import spread

METRICS = (
    "lost",
    "lost_pct",
    "acknowledged_but_lost",
    "lost_caller_told",
    "persisted_without_ack",
    "producer_stall_s",
    "no_accept_s",
    "backlog_peak",
    "catch_up_s",
)


def _answers(arm_run: dict[str, Any]) -> dict[str, int]:
    answers = arm_run["client"].get("answers", {})
    return {str(k): int(v) for k, v in answers.items()}


def summarise(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    meta: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:
        for p in run["paths"]:
            key = (run["broker"], run["scenario"], p["arm"])
            groups.setdefault(key, []).append(p)
            meta[key] = {"path": p["path"], "acks": p["acks"], "budget_s": p["budget_s"]}
    out = []
    for key, arm_runs in groups.items():
        broker, scenario, arm = key
        kinds = sorted({k for r in arm_runs for k in _answers(r)})
        out.append(
            {
                "broker": broker,
                "scenario": scenario,
                "arm": arm,
                **meta[key],
                "repeats": len(arm_runs),
                **{m: spread(r[m] for r in arm_runs) for m in METRICS},
                "freshness_recovered_s": spread(r["freshness"]["recovered_after_s"] for r in arm_runs),
                "freshness_stale_s": spread(r["freshness"]["stale_s"] for r in arm_runs),
                "freshness_not_recovered_runs": sum(r["freshness"]["recovered_after_s"] is None for r in arm_runs),
                "answers": {k: spread(_answers(r).get(k, 0) for r in arm_runs) for k in kinds},
            }
        )
    return out
