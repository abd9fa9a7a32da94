"""The statistics all experiments share: interleaving, spread, uncensored percentiles, bottleneck."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ridehail.bench.experiments.stats import bottleneck, interleaved_schedule, spread, uncensored_percentiles_ms


def test_every_arm_runs_once_per_repeat_in_varying_order() -> None:
    sched = interleaved_schedule(["a", "b", "c", "d"], 5, seed=3)
    assert len(sched) == 20
    for r in range(5):
        assert sorted(arm for rep, arm in sched if rep == r) == ["a", "b", "c", "d"]
    orders = {tuple(arm for rep, arm in sched if rep == r) for r in range(5)}
    assert len(orders) > 1  # not the same order every time


def test_spread_reports_median_iqr_and_missing_runs() -> None:
    s = spread([1.0, 2.0, 3.0, 4.0, None])
    assert s["median"] == 2.5 and s["iqr"] == [1.75, 3.25]
    assert s["runs"] == 5 and s["missing"] == 1
    assert spread([None, None])["median"] is None


@given(st.lists(st.floats(0.0001, 10.0), min_size=1, max_size=200))
def test_without_unanswered_requests_the_percentiles_are_numpys(values: list[float]) -> None:
    out = uncensored_percentiles_ms(values, 0)
    for q in (50, 99):
        assert abs(out[f"p{q}"] - round(float(np.percentile(values, q)) * 1000, 2)) < 0.02


def test_unanswered_requests_push_the_tail_beyond_the_timeout() -> None:
    answered = [0.01] * 980
    out = uncensored_percentiles_ms(answered, 20)  # 2 % never answered
    assert out["p50"] == 10.0
    assert out["p99"] is None and out["p99_beyond_timeout"] is True
    assert out["n"] == 1000 and out["unanswered"] == 20
    # one in a thousand unanswered does not reach p99 (rank 989.01 of 0..999)
    assert uncensored_percentiles_ms([0.01] * 999, 1)["p99"] == 10.0


def test_bottleneck_names_the_saturated_single_threaded_process_first() -> None:
    cores = {"ingest[rest]": 0.97, "postgres": 0.6, "broker": 0.1}
    assert bottleneck(cores, ["ingest[rest]"], 2).startswith("ingest[rest] CPU")
    assert bottleneck({"postgres": 1.0, "broker": 0.8}, [], 2).startswith("machine CPU")
    assert bottleneck({"postgres": 0.2}, [], 2).startswith("none saturated")
