"""Smoke runs of the experiment harness with tiny steps: real subprocesses (matching, ingest
edges), a private embedded Postgres and broker; checks the JSON shape and the invariants every
real run must hold (every ping produced is persisted or lost, nothing acknowledged is missing)."""

from __future__ import annotations

import json

import pytest

from ridehail.bench.experiments.ingest_study import run_ingest_study
from ridehail.bench.experiments.report_ingest import plot_ingest_study

pytestmark = pytest.mark.integration


def test_ingest_study_small_run_has_the_documented_shape_and_its_accounting_adds_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # one arm per load generator and edge shape: kafka and kafka-per-device share KafkaLoad, the
    # single-ping rest arms share HttpLoad and the edge (group commit: tests/integration/test_ingest_batch.py)
    arms = ("kafka-per-device", "rest-batch", "rest-2-workers")
    lines: list[str] = []
    result = run_ingest_study(
        arms,
        repeats=1,
        rate_equal=100.0,
        rate_capacity=300.0,
        seconds=1.0,
        warmup=0.3,
        drivers=50,
        device_producers=4,
        settle_s=0.5,
        progress=lambda n, total, run: lines.append(f"{n}/{total}"),
    )
    json.dumps(result)  # serialisable
    assert result["bench"] == "ingest"
    assert {"cpu_count", "load_avg_at_start", "load_avg_at_end", "postgres_probe"} <= set(result["machine"])
    assert set(result["config"]["arms"]) == set(arms)
    assert len(result["runs"]) == len(arms) * 2 == len(lines)
    for run in result["runs"]:
        acc = run["accounting"]
        assert acc["produced"] == acc["persisted"] + acc["lost"] > 0, run
        assert acc["acknowledged_but_missing"] == 0, run
        assert acc["rows_beyond_produced"] == 0, run
        assert run["latency_ms"]["n"] == run["pings_due_in_window"] > 0
        assert run["bottleneck"] and run["server_cpu_cores"]["total"] > 0
        assert run["malformed"]["sent"] == 10
        refused = run["malformed"]["rejected_4xx"] + run["malformed"]["dead_lettered"]
        assert refused == 10, run  # refused where each arm refuses them, never counted as pings
        charged = {name.split(" worker")[0] for name in run["server_cpu_cores"]} - {"total"}
        assert charged == set(result["config"]["cpu_charged_to"][run["arm"]]), run
    two = next(r for r in result["runs"] if r["arm"] == "rest-2-workers")
    assert {"ingest[rest-2-workers] worker 1", "ingest[rest-2-workers] worker 2"} <= set(two["server_cpu_cores"])
    for arm in arms:
        for point in ("equal", "capacity"):
            s = result["summary"][arm][point]
            assert s["accounting_adds_up"] and s["persisted_per_s"]["runs"] == 1
            assert {"p50_ms", "p99_ms", "cpu_ms_per_1k_pings", "bottleneck"} <= set(s)
    plot_ingest_study(result, tmp_path / "ingest.png")
    assert (tmp_path / "ingest.png").stat().st_size > 10_000
