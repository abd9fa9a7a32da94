"""Smoke runs of the experiment harness with tiny steps: real subprocesses (matching, ingest
edges), a private embedded Postgres and broker; checks the JSON shape and the invariants every
real run must hold (nothing accepted is lost when only the consumer stops)."""

from __future__ import annotations

import json

import pytest

from ridehail.bench.experiments.ingest_bench import run_ingest_bench
from ridehail.bench.experiments.report import plot_ingest

pytestmark = pytest.mark.integration


def test_ingest_bench_small_run_has_the_documented_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_ingest_bench(steps=(100,), paths=("kafka", "rest", "rest-kafka"), seconds=2.0, warmup=1.0)
    json.dumps(result)  # serialisable
    assert result["bench"] == "ingest"
    assert {"cpu_count", "cpu_model", "measured_at"} <= set(result["machine"])
    assert [(s["path"], s["drivers"]) for s in result["steps"]] == [("kafka", 100), ("rest", 100), ("rest-kafka", 100)]
    for step in result["steps"]:
        assert set(step) >= {
            "offered_per_s",
            "accepted_per_s",
            "persisted_per_s",
            "achieved_per_s",
            "latency_ms",
            "errors",
            "server_cpu_cores",
            "client_cpu_cores",
            "ping_to_row_ms",
            "drain_s",
            "saturated",
            "malformed",
            "server_cpu_ms_per_1k_pings",
        }
        # 100 pings/s is far below any path's capacity: nearly all of it gets through, no errors
        assert step["achieved_per_s"] > 50, step
        assert step["errors"] == {}, step
        assert step["latency_ms"]["n"] > 50 and step["latency_ms"]["p50"] > 0
        assert step["ping_to_row_ms"]["samples"] > 0
        assert step["server_cpu_cores"]["total"] > 0
        assert step["drain_s"] is not None
    assert "ingest[rest]" in result["steps"][1]["server_cpu_cores"]
    # bad pings are refused where each path refuses them, and never counted as errors or losses
    kafka, rest, rest_kafka = result["steps"]
    assert kafka["malformed"] == {"sent": 10, "rejected_4xx": 0, "dead_lettered": 10}
    assert rest["malformed"] == {"sent": 10, "rejected_4xx": 10, "dead_lettered": 0}
    assert rest_kafka["malformed"] == {"sent": 10, "rejected_4xx": 10, "dead_lettered": 0}
    assert result["summary"]["ratio_kafka_to_rest"] > 0
    plot_ingest(result, tmp_path / "ingest.png")
    assert (tmp_path / "ingest.png").stat().st_size > 10_000
