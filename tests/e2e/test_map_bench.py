"""A small ``ridehail bench map`` (500 cars, a few seconds) in the test command: the real simulator,
broker and gateway, and the map in headless Chromium. It checks that the JSON has its documented
keys as numbers and that the page drew cars where Leaflet projects them; never how fast (machines
are noisy: the numbers are in docs/bench/map.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

NUMBERS = [
    "cars",
    "cars_on_page",
    "cars_drawn",
    "cars_in_view",
    "fps",
    "car_repaints_per_s",
    "car_step_ms_mean",
    "gps_to_browser_p50_ms",
    "gps_to_browser_p99_ms",
    "cpu_count",
    "seconds",
]


@pytest.mark.parametrize("renderer", ["canvas", "markers"])
def test_bench_map_measures_the_page(renderer: str, tmp_path: Path) -> None:
    out = tmp_path / "map.json"
    args = ["--cars", "500", "--seconds", "3", "--warmup", "1", "--renderer", renderer, "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "ridehail.cli", "bench", "map", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    for key in NUMBERS:
        assert isinstance(data[key], int | float) and not isinstance(data[key], bool), f"{key} = {data[key]!r}"
        assert data[key] == data[key], f"{key} is NaN"
    assert data["renderer"] == renderer
    assert data["cars_drawn"] > 0
    assert len(data["load_average_at_start"]) == 3
    assert all(isinstance(x, int | float) for x in data["load_average_at_start"])
    assert "fps" in result.stdout  # the per-second progress lines
    if renderer == "canvas":  # the one-canvas drawer paints each sampled car where Leaflet puts it
        assert data["drawn_where_leaflet_projects"] >= 0.9, data["drawn_where_leaflet_projects"]
    assert data["page_errors"] == [], data["page_errors"]
