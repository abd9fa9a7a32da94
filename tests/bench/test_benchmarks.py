"""Small runs of every `ridehail bench ...` command: each writes JSON with the documented keys.

Marked ``bench``: not part of the pass/fail test run (``-m "not bench"``); run them with
``pytest -m bench tests/bench``. The real measurements are ``make bench`` (docs/bench/*.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

SMALL_RUNS = {
    "simulator": (
        ["--drivers", "500", "--seconds", "3", "--warmup", "1"],
        ["pings_per_s", "cpu_cores", "rss_mb", "drivers"],
    ),
    "matching": (
        ["--ingest-drivers", "500", "--ingest-rate", "2000", "--ingest-seconds", "3", "--assign-seconds", "3"],
        ["ingest_pings_per_s", "assign_p50_ms", "assign_p99_ms", "batch_solve_ms_1000x2000", "lost", "double_assigned"],
    ),
    "auth": (["--clients", "8", "--me-requests", "200", "--logins", "4"], ["login_per_s", "verify_per_s", "me_p99_ms"]),
    "gateway": (
        ["--drivers", "500", "--clients", "5", "--seconds", "3", "--slow-seconds", "3", "--raw-seconds", "1"],
        ["e2e_p50_ms", "e2e_p99_ms", "deliveries_per_s", "raw_broadcast_per_s", "slow_client_p99_ms"],
    ),
    "replay": (
        ["--events", "20000", "--timing-seconds", "3", "--no-determinism"],
        ["max_speed_events_per_s", "timing_error_p99_ms"],
    ),
    "map": (
        ["--cars", "500", "--seconds", "3", "--warmup", "1"],
        ["cars", "cars_drawn", "fps", "gps_to_browser_p50_ms", "gps_to_browser_p99_ms", "cpu_count", "seconds"],
    ),
    "pricing": (
        ["--drivers", "500", "--pings-per-driver", "5", "--requests", "200", "--clients", "8", "--seconds", "3"],
        ["cells", "events_per_s", "recompute_ms", "quote_p99_ms"],
    ),
}


@pytest.mark.parametrize("name", sorted(SMALL_RUNS))
def test_bench_writes_its_documented_keys(name: str, tmp_path: Path) -> None:
    args, keys = SMALL_RUNS[name]
    out = tmp_path / f"{name}.json"
    result = subprocess.run(
        [sys.executable, "-m", "ridehail.cli", "bench", name, *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    for key in keys:
        assert key in data, f"bench {name} wrote no {key}"
        assert isinstance(data[key], int | float), f"{key} = {data[key]!r}"
        assert data[key] == data[key], f"{key} is NaN (nothing measured)"


@pytest.mark.parametrize(
    ("broker", "scenarios"),
    [("tansu", "broker"), ("kafka", "broker-1-of-3,broker-2-of-3,partition-1-of-3,cluster-restart")],
)
def test_outage_bench_writes_its_documented_keys(broker: str, scenarios: str, tmp_path: Path) -> None:
    out = tmp_path / f"outage-{broker}.json"
    args = ["--broker", broker, "--scenarios", scenarios, "--paths", "kafka", "--outage-seconds", "5", "--rate", "50"]
    result = subprocess.run(
        [sys.executable, "-m", "ridehail.cli", "bench", "outage", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["broker"]["kind"] == broker and data["broker"]["label"]
    assert "load_avg_at_start" in data["machine"]
    assert [s["scenario"] for s in data["scenarios"]] == scenarios.split(",")
    for scenario in data["scenarios"]:
        (path,) = scenario["paths"]
        assert path["path"] == "kafka"
        for key in ("lost", "lost_after_accept", "backlog_peak", "producer_stall_s", "no_accept_s"):
            assert isinstance(path[key], int | float), f"{key} = {path[key]!r}"
        assert "catch_up_s" in path
        if broker == "kafka":
            assert path["lost_after_accept"] == 0, scenario


SCALE_KEYS = ["instances", "ingest_pings_per_s", "assign_p99_ms", "mean_pickup_eta_s", "double_assigned", "lost"]


def test_bench_matching_scale_writes_one_entry_per_instance_count(tmp_path: Path) -> None:
    out = tmp_path / "matching-scale.json"
    args = ["--phase", "scale", "--instances", "1,2", "--scale-drivers", "2000", "--scale-rounds", "2"]
    args += ["--scale-fleet", "100", "--scale-requests", "10"]
    result = subprocess.run(
        [sys.executable, "-m", "ridehail.cli", "bench", "matching", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [entry["instances"] for entry in data["scale"]] == [1, 2]
    for entry in data["scale"]:
        for key in SCALE_KEYS:
            assert isinstance(entry[key], int | float), f"{key} = {entry[key]!r}"
        assert entry["double_assigned"] == 0 and entry["lost"] == 0
    assert data["scale_cpu_quota_cores_per_instance"] == 0.25
