"""How the bench's feed client counts the frames that brought each simulator step's pings."""

from ridehail.bench.gateway import ClientStats, StepFrames, step_delivery


def _frame(stats: ClientStats, now_ms: float, cars: list[tuple[str, int]]) -> None:
    """One frame as watch_feed sees it: car entries [id, lat, lon, status, ts]."""
    pinged = stats.new_pings([[car, 0.0, 0.0, "available", ts] for car, ts in cars])
    stats.note_steps(pinged, now_ms)


def test_a_step_split_over_two_frames_is_counted_with_its_spread() -> None:
    stats = ClientStats(steps={})
    _frame(stats, 1000.0, [("a", 900), ("b", 900)])  # step 900: first part
    _frame(stats, 1100.0, [("c", 900), ("a", 1100)])  # its second part, and step 1100 whole
    _frame(stats, 1300.0, [("d", 1300)])
    out = step_delivery(stats.steps or {})
    assert out["steps"] == 3
    assert out["in_two_or_more_frames_share"] == round(1 / 3, 3)
    assert out["frames_max"] == 2
    assert out["spread_p50_ms"] == 0.0 and out["spread_p99_ms"] == 100.0
    assert out["first_frame_age_p50_ms"] == 0.0 and out["first_frame_age_p99_ms"] == 100.0  # 0, 0, 100
    assert out["last_frame_age_p99_ms"] == 200.0  # step 900's second part came 200 ms after its pings


def test_a_resent_entry_does_not_count_as_a_delivery_of_its_step() -> None:
    stats = ClientStats(steps={})
    _frame(stats, 1000.0, [("a", 900)])
    _frame(stats, 1500.0, [("a", 900)])  # the same ping again (the car changed state): not a new frame of 900
    assert stats.steps == {900: StepFrames(1000.0, 1000.0, 1)}


def test_steps_are_not_tracked_unless_asked_and_an_empty_record_has_no_shares() -> None:
    stats = ClientStats()
    _frame(stats, 1000.0, [("a", 900)])
    assert stats.steps is None
    assert step_delivery({})["in_two_or_more_frames_share"] is None
