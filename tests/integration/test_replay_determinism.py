"""A seeded simulation, recorded and replayed into a fresh stack, ends in the same database state.

Real processes throughout: two embedded brokers, two databases, ``ridehail serve matching`` twice,
``ridehail simulate --seed`` once (see ``ridehail.replay.determinism``). The run has no ride
requests: ride outcomes are decided afresh by the matching of the replay stack, so they are not a
function of the recording alone (``docs/replay.md``, "What it covers"); the fleet state is.
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
        seed=11, drivers=30, duration_s=10, rides=0, sim_speedup=5, speed=None, keep_recording=recording
    )
    run_a, run_b = result["run_a"], result["run_b"]
    assert run_a["drivers"] == 30  # every driver of the seeded fleet reached the database
    pings = result["recorded"]["per_topic"]["ridehail.driver.location.v1"]
    assert pings >= 30 * 5  # several pings per driver: the hash holds their final positions
    with RecordingReader(recording) as reader:
        assert sum(1 for _ in reader.records()) == result["recorded"]["records"] == result["replayed"]
    assert run_b == run_a  # same hash, same counts per status
    assert result["match"] is True
