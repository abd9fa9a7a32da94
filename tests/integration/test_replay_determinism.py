"""A seeded simulation, recorded and replayed into a fresh stack, ends in the same database state.

Real processes throughout: two embedded brokers, two databases, ``ridehail serve matching`` twice,
``ridehail simulate --seed`` once (see ``ridehail.replay.determinism``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ridehail.replay.determinism import run_determinism_check
from ridehail.replay.fileformat import RecordingReader

pytestmark = pytest.mark.integration


def test_seeded_run_replayed_into_a_fresh_stack_gives_the_same_state_hash(tmp_path: Path) -> None:
    recording = tmp_path / "run-a.rhrec"
    result = run_determinism_check(
        seed=11, drivers=30, duration_s=20, rides=6, sim_speedup=10, speed=1.0, keep_recording=recording
    )
    run_a, run_b = result["run_a"], result["run_b"]
    # the run did something worth comparing: every driver moved, rides were requested and assigned
    assert run_a["drivers"] == 30 and run_a["rides"] == 6
    assert sum(n for status, n in run_a["ride_statuses"].items() if status != "requested") > 0
    per_topic = result["recorded"]["per_topic"]
    assert per_topic["ridehail.driver.location.v1"] > 30 and per_topic["ridehail.ride.request.v1"] == 6
    assert per_topic["ridehail.ride.event.v1"] > 0
    with RecordingReader(recording) as reader:
        assert sum(1 for _ in reader.records()) == result["recorded"]["records"] == result["replayed"]
    assert run_b == run_a
    assert result["match"] is True
