"""A small ``ridehail bench stack`` in the test command: the real ``ridehail up`` (100 drivers),
rides through the REST API and a websocket client on the whole city. It checks that the JSON has
its documented keys as numbers and that every part was really measured (rides offered, GPS
samples, every service's memory); never how fast or how heavy (the numbers are in
docs/bench/stack-*.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ridehail.catalog import DEFAULT_SHARED_PROCESSES, process_groups
from tests.conftest import admin_dsn

pytestmark = pytest.mark.e2e

NUMBERS = [
    "rss_mb_total",
    "cpu_cores_total",
    "request_to_offer_p50_ms",
    "request_to_offer_p95_ms",
    "request_to_offer_p99_ms",
    "gps_to_client_p50_ms",
    "gps_to_client_p99_ms",
    "consumer_lag_max",
]
# Keyed by process: services that share one (RIDEHAIL_SHARED_PROCESSES, the default here: the
# bench starts the stack without the caller's RIDEHAIL_ variables) are named together.
PROCESSES = ["+".join(g) for g in process_groups(DEFAULT_SHARED_PROCESSES)]
SERVICES = {"supervisor", "broker", *PROCESSES}


def test_bench_stack_measures_the_whole_stack(tmp_path: Path) -> None:
    out = tmp_path / "stack.json"
    args = ["--drivers", "100", "--rides-per-s", "2", "--seconds", "6", "--warmup", "4", "--json", str(out)]
    args += ["--set", "RIDEHAIL_PING_SLOTS=4"]
    result = subprocess.run(
        [sys.executable, "-m", "ridehail.cli", "bench", "stack", *args, "--admin-url", admin_dsn()],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    for key in NUMBERS:
        assert isinstance(data[key], int | float), f"{key} = {data[key]!r}"
    assert data["processes"] == PROCESSES, data["processes"]
    assert set(data["rss_mb_by_service"]) == SERVICES, data["rss_mb_by_service"]
    assert all(mb > 5 for mb in data["rss_mb_by_service"].values()), data["rss_mb_by_service"]
    assert data["rides_requested"] >= 5 and data["rides_offered"] == data["rides_requested"], data
    assert data["gps_to_client_samples"] > 50
    assert 0 <= data["client_loop_lag_p99_ms"] <= data["client_loop_lag_max_ms"], data  # the bench's own loop
    steps = data["gps_steps"]
    assert steps["steps"] > 10 and 0 <= steps["in_two_or_more_frames_share"] <= 1, steps
    assert steps["frames_max"] >= 1 and 0 <= steps["spread_p50_ms"] <= steps["spread_p99_ms"], steps
    assert set(data["ride_path_stages"]) == {"post_to_row", "row_to_published", "published_to_offered"}
    assert len(data["machine"]["load_average_at_start"]) == 3
    assert data["machine"]["speed_probe_ms_at_start"] > 0
    assert 0 <= data["machine"]["cpu_steal_share"] < data["machine"]["cpu_busy_share"] <= 1, data["machine"]
    assert data["settings"] == {"RIDEHAIL_PING_SLOTS": "4"}
    assert data["broker"] == "tansu"
    assert isinstance(data["feed_entries_resent"], int)
    assert len(data["series"]) >= 2, data["series"]  # CPU and RSS span by span: does the stack get heavier?
    for span in data["series"]:
        assert span["to_s"] > span["from_s"] and set(span["rss_mb_by_service"]) == SERVICES, span
        assert span["cpu_cores_by_service"]["broker"] > 0, span
    assert "[measure]" in result.stderr  # the progress display
