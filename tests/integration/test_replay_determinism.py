"""A seeded simulation, recorded and replayed into a fresh stack, ends in the same database state.

Real processes throughout: two embedded brokers, two databases, ``ridehail serve matching`` twice,
``ridehail simulate --seed`` once (see ``ridehail.harness.determinism``). The run includes ride
requests: the simulated drivers answer matching's offers, drive, pick up and drop off; the replay
stack's matching does not decide the replayed rides again but applies the recorded decisions
(offers, timeouts, assignments, expiries with their driver claims), so ride outcomes are a function
of the recording too (``docs/replay.md``, "Determinism").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ridehail.harness.determinism import run_determinism_check
from ridehail.replay.recording_reader import RecordingReader

pytestmark = pytest.mark.integration


def test_seeded_run_replayed_into_a_fresh_stack_gives_the_same_state_hash(tmp_path: Path) -> None:
    recording = tmp_path / "run-a.rhrec"
    result = run_determinism_check(
        seed=11, drivers=30, duration_s=10, rides=8, sim_speedup=5, speed=None, keep_recording=recording
    )
    run_a, run_b = result["run_a"], result["run_b"]
    assert run_a["drivers"] == 30  # every driver of the seeded fleet reached the database
    pings = result["recorded"]["per_topic"]["ridehail.driver.location.v1"]
    assert pings >= 30 * 5  # several pings per driver: the hash holds their final positions
    with RecordingReader(recording) as reader:
        assert sum(1 for _ in reader.records()) == result["recorded"]["records"] == result["replayed"]
    events = result["recorded"]["per_topic"].get("ridehail.ride.event.v1", 0)
    assert events > 0  # offers, answers and lifecycle events were recorded and replayed
    decided = {k: v for k, v in run_a["ride_statuses"].items() if k != "requested"}
    assert run_a["rides"] == 8 and sum(decided.values()) >= 1, run_a  # matching A decided rides
    assert run_b == run_a  # same hash, same counts per status
    assert result["match"] is True
