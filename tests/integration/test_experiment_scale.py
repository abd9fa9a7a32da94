"""A small run of the scale study (claim 3): real matching instances in one consumer group, a
real broker and Postgres; checks the JSON shape and that every request is accounted for."""

from __future__ import annotations

import json

import pytest

from ridehail.bench.experiments.scale_study import METRICS, run_scale_study
from ridehail.bench.matching_scale import ScaleConfig

pytestmark = pytest.mark.integration


def test_scale_study_small_run_accounts_for_every_request(postgres_admin: str) -> None:
    cfg = ScaleConfig(instances=(1, 2), cpu_quota=0.0, drivers=500, rounds=2, fleet=60, requests=8, rps=8.0)
    result = run_scale_study(postgres_admin, cfg, repeats=1)
    json.dumps(result)
    assert result["bench"] == "scale"
    assert {"load_avg_at_start", "load_avg_at_end", "cpu_count"} <= set(result["machine"])
    assert sorted(r["instances"] for r in result["runs"]) == [1, 2]
    for run in result["runs"]:
        assert set(METRICS) <= set(run)
        # every measured request got an answer (assigned or expired); none was lost or doubled
        assert run["assigned"] + run["expired"] == cfg.requests, run
        assert run["lost"] == 0 and run["double_assigned"] == 0, run
        assert run["ingest_pings"] == cfg.drivers * cfg.rounds and run["ingest_pings_per_s"] > 0
        assert run["consumer_lag_max"] >= 0
    by = result["summary"]["by_instances"]
    assert set(by) == {"1", "2"}
    assert by["1"]["ingest_pings_per_s"]["runs"] == 1
    assert result["summary"]["ingest_speedup_vs_first"]["1"] == 1.0
