"""The pure logic of ``ridehail bench outage``: loss accounting from id sets, position freshness
over logical drivers, catch-up, the arms and the delivery settings of each acks level."""

from __future__ import annotations

import pytest

from ridehail.bench.experiments.outage_arms import Arm, build_arms
from ridehail.bench.experiments.outage_measure import StoredPing, accounting, arm_settled, catch_up_s, freshness
from ridehail.bench.experiments.outage_summary import summarise
from ridehail.common.kafka import delivery_overrides


def test_accounting_splits_loss_into_acknowledged_and_told() -> None:
    # 10 produced; 0-5 acknowledged; 0-3 and 7 stored: 4, 5 acknowledged but lost; 6, 8, 9 lost, caller told
    out = accounting(10, {0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 7})
    assert out == {
        "produced": 10,
        "acknowledged": 6,
        "persisted": 5,
        "lost": 5,
        "acknowledged_but_lost": 2,
        "lost_caller_told": 3,
        "persisted_without_ack": 1,
    }
    assert out["produced"] == out["persisted"] + out["lost"]


def test_an_arm_is_settled_only_once_every_acknowledged_ping_is_stored() -> None:
    # 5 produced: 0-3 acknowledged, 4 timed out at the client (gone) yet written by the broker
    acknowledged = {0, 1, 2, 3}
    # 0-2 and 4 stored: stored + gone = 5 = produced, but acknowledged ping 3 is still on its way
    assert not arm_settled(5, acknowledged, 1, {0, 1, 2, 4})
    assert arm_settled(5, acknowledged, 1, {0, 1, 2, 3, 4})
    assert arm_settled(5, acknowledged, 1, {0, 1, 2, 3})  # the gone one need not arrive
    # a ping not answered yet (neither acknowledged nor gone): not settled
    assert not arm_settled(6, acknowledged, 1, {0, 1, 2, 3, 4})


def test_accounting_refuses_rows_it_did_not_produce() -> None:
    with pytest.raises(ValueError, match="outside"):
        accounting(3, set(), {0, 5})


def _steady(drivers: int, start_ms: float, end_ms: float, delay_ms: float, k0: int = 0) -> list[StoredPing]:
    """One ping per driver per second from start to end, each stored ``delay_ms`` after it was made."""
    out, k, t = [], k0, start_ms
    while t < end_ms:
        for _ in range(drivers):
            out.append(StoredPing(k, t, t + delay_ms))
            k += 1
        t += 1000.0
    return out


def test_freshness_recovers_at_once_when_new_pings_arrive_right_after_return() -> None:
    # pings before 10 s stored on time, none made during 10-30 s, new ones from 30 s stored after 100 ms
    pings = _steady(20, 0, 10_000, 100) + _steady(20, 30_000, 40_000, 100, k0=1000)
    out = freshness(pings, 20, return_ms=30_000, end_ms=40_000, threshold_s=3.0, start_ms=10_000)
    assert out["p99_age_at_return_s"] == pytest.approx(21.0, abs=0.01)  # the newest is from 9 s
    assert out["recovered_after_s"] == pytest.approx(0.25)  # first tick after the 30.1 s rows
    # stale from 12 s (the 9 s pings are 3 s old) to 30 s: ticks 12.0 ... 30.0
    assert out["last_stale_s"] == pytest.approx(20.0) and out["stale_s"] == pytest.approx(18.25)
    assert out["p99_age_s"]["t"][:3] == [0.0, 1.0, 2.0]
    assert out["logical_drivers"] == 20 and out["threshold_s"] == 3.0


def test_freshness_waits_for_a_fifo_backlog_to_drain() -> None:
    # everything made during the outage (10-30 s) and after is stored in order, 1 ms per ping after
    # the return at 30 s: the current positions land only after the backlog in front of them
    made = _steady(10, 10_000, 40_000, 0)
    pings = [StoredPing(p.k, p.made_ms, 30_000 + i * 20.0) for i, p in enumerate(made)]
    out = freshness(pings, 10, return_ms=30_000, end_ms=40_000, threshold_s=3.0)
    # the ping of 27.x s (age < 3 s) lands after the 170 older ones: 3.4 s in, when it is already too
    # old; the queue keeps growing older than 3 s until drained, so recovery needs the backlog gone
    assert out["recovered_after_s"] is not None and out["recovered_after_s"] > 3.0


def test_freshness_without_recovery_in_the_window_is_none() -> None:
    pings = _steady(5, 0, 10_000, 0)
    out = freshness(pings, 5, return_ms=30_000, end_ms=35_000)
    assert out["recovered_after_s"] is None
    assert freshness([], 5, 0, 1000)["p99_age_at_return_s"] is None


def test_catch_up_is_the_last_pre_return_ping_landing() -> None:
    pings = [StoredPing(0, 1000, 1500), StoredPing(1, 29_000, 33_500), StoredPing(2, 31_000, 40_000)]
    assert catch_up_s(pings, 30_000) == 3.5
    assert catch_up_s([StoredPing(0, 31_000, 31_100)], 30_000) is None


def test_arms_every_path_at_every_budget_and_the_other_acks_levels_at_one() -> None:
    arms = build_arms(("kafka", "rest"), (5.0, 15.0, 60.0), ("0", "1", "all"), 15.0)
    assert [a.name for a in arms] == [
        "kafka acks=all budget=5s",
        "kafka acks=all budget=15s",
        "kafka acks=all budget=60s",
        "rest budget=5s",
        "rest budget=15s",
        "rest budget=60s",
        "kafka acks=0 budget=15s",
        "kafka acks=1 budget=15s",
    ]
    codes = [a.code for a in arms]
    assert len(set(codes)) == len(codes) and all("-" not in c for c in codes)
    assert Arm("rest-kafka-enqueue", 2.5).code == "reb2p5"
    with pytest.raises(ValueError, match="acks"):
        build_arms(("kafka",), (5.0,), ("2",), 5.0)
    with pytest.raises(ValueError, match="budgets"):
        build_arms(("kafka",), (0.0,), ("all",), 5.0)


def test_delivery_overrides_keep_idempotence_only_with_acks_all() -> None:
    assert delivery_overrides() == {"acks": "all", "enable.idempotence": True}
    assert delivery_overrides("1", 5.0) == {
        "acks": "1",
        "enable.idempotence": False,
        "message.timeout.ms": 5000,
        "request.timeout.ms": 5000,
    }
    assert delivery_overrides("0", 60.0)["request.timeout.ms"] == 30_000
    with pytest.raises(ValueError):
        delivery_overrides("-1")


def test_summary_is_the_spread_over_repeats() -> None:
    def arm_run(lost: int, fresh: float | None) -> dict:  # type: ignore[type-arg]
        return {
            "path": "rest",
            "arm": "rest budget=5s",
            "acks": None,
            "budget_s": 5.0,
            "lost": lost,
            "lost_pct": lost / 10,
            "acknowledged_but_lost": 0,
            "lost_caller_told": lost,
            "persisted_without_ack": 0,
            "producer_stall_s": 1.0,
            "no_accept_s": 1.0,
            "backlog_peak": 3,
            "catch_up_s": 0.5,
            "freshness": {"recovered_after_s": fresh, "stale_s": 2.0},
            "client": {"answers": {"503_retry_after": lost * 2}},
        }

    runs = [
        {"broker": "kafka", "scenario": "postgres", "paths": [arm_run(n, f)]}
        for n, f in ((1, 0.5), (3, None), (2, 1.0))
    ]
    (s,) = summarise(runs)
    assert s["lost"]["median"] == 2 and s["lost"]["iqr"] == [1.5, 2.5] and s["repeats"] == 3
    assert s["freshness_recovered_s"]["missing"] == 1 and s["freshness_not_recovered_runs"] == 1
    assert s["answers"]["503_retry_after"]["median"] == 4


def test_rest_budget_counts_time_queued_in_the_client_and_answers_by_kind() -> None:
    import asyncio
    import time

    from ridehail.common.ports import free_port
    from ridehail.simulator.transport import RestPingSender

    results: list[tuple[str, str]] = []

    async def main() -> RestPingSender:
        # nothing listens on this port: every attempt is refused
        sender = RestPingSender(
            f"http://127.0.0.1:{free_port()}/ingest/ping",
            concurrency=2,
            budget_s=0.6,
            backoff_base_s=0.05,
            on_result=lambda tag, outcome, _lat: results.append((tag, outcome)),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop, drain_s=3.0))
        sender.submit(b"{}", "stale", created=time.monotonic() - 1.0)  # older than the budget already
        sender.submit(b"{}", "fresh")
        await asyncio.sleep(1.5)
        stop.set()
        await task
        return sender

    sender = asyncio.run(main())
    assert sorted(results) == [("fresh", "given_up"), ("stale", "given_up")]
    assert sender.stats.answers.get("refused", 0) >= 2  # only the fresh one was tried, several times
    assert sender.stats.given_up == 2
