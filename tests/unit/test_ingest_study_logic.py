"""Pure logic of the ingest controls and the ingest study: batch parsing and sender checks,
coalescing to the newest ping per driver, group commit grouping, connection sizing, the
accounting of a run and the summary."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from ridehail.bench.experiments import ingest_arms as arms
from ridehail.bench.experiments.ingest_study import _account
from ridehail.bench.experiments.ingest_summary import summarize
from ridehail.common.auth_tokens import Principal
from ridehail.domain.events import DriverLocation, encode
from ridehail.ingest.batch import BatchRefused, check_sender, parse_batch, results
from ridehail.ingest.group_commit import GroupCommit
from ridehail.ingest.sinks import newest_per_driver


def ping(driver: str, seq: int, lat: float = 57.70) -> DriverLocation:
    return DriverLocation(driver_id=driver, seq=seq, lat=lat, lon=11.97)


def principal(sub: str, role: str) -> Principal:
    return Principal(sub=sub, role=role, jti="j", exp=2**40)


def test_parse_batch_splits_valid_and_rejected_items() -> None:
    body = b"[" + b",".join([encode(ping("a", 1)), b'{"x":1}', encode(ping("b", 2, lat=59.33)), b"3"]) + b"]"
    parsed = parse_batch(body, 10)
    assert [p.driver_id for p in parsed.pings] == ["a"] and parsed.positions == [0]
    assert set(parsed.rejected) == {1, 2, 3} and "service area" in parsed.rejected[2]
    assert [r["status"] for r in results(parsed, ["stored"])] == ["stored", "rejected", "rejected", "rejected"]


@pytest.mark.parametrize(
    ("body", "status"), [(b"[", 400), (b"\xff", 400), (b"{}", 422), (b"null", 422), (b"[]", 422), (b"[1,2,3]", 413)]
)
def test_parse_batch_refuses_the_request(body: bytes, status: int) -> None:
    with pytest.raises(BatchRefused) as err:
        parse_batch(body, 2)
    assert err.value.status == status


def test_only_own_pings_for_a_driver_any_for_the_aggregator() -> None:
    parsed = parse_batch(b"[" + encode(ping("a", 1)) + b"," + encode(ping("b", 1)) + b"]", 10)
    check_sender(principal("x", "admin"), parsed)
    for who in (principal("a", "driver"), principal("a", "rider")):
        with pytest.raises(BatchRefused) as err:
            check_sender(who, parsed)
        assert err.value.status == 403


def test_newest_per_driver_keeps_the_highest_seq_and_sorts() -> None:
    pings = [ping("b", 2), ping("a", 1), ping("b", 5), ping("b", 5)]
    newest, winner = newest_per_driver(pings)
    assert [(p.driver_id, p.seq) for p in newest] == [("a", 1), ("b", 5)]
    assert winner == [-1, 1, 2, -1]  # the equal duplicate loses: stale


def test_group_commit_groups_concurrent_writes_and_fails_them_together() -> None:
    groups: list[int] = []

    async def write_many(pings: Sequence[DriverLocation]) -> list[str]:
        groups.append(len(pings))
        await asyncio.sleep(0.01)
        if any(p.driver_id == "boom" for p in pings):
            raise OSError("db down")
        return ["stored"] * len(pings)

    async def main() -> None:
        gc = GroupCommit(write_many, window_s=0.02, max_items=25)
        outcomes = await asyncio.gather(*(gc.write(ping(f"d{i}", 1)) for i in range(60)))
        assert outcomes == ["stored"] * 60 and groups == [25, 25, 10]
        failed = await asyncio.gather(gc.write(ping("boom", 1)), gc.write(ping("x", 1)), return_exceptions=True)
        assert all(isinstance(f, OSError) for f in failed)
        assert await gc.write(ping("after", 1)) == "stored"  # a failed group does not wedge the next
        await gc.close()

    asyncio.run(main())


def test_connections_follow_littles_law_within_bounds() -> None:
    assert arms.connections_for(1000, 0.25) == 250
    assert arms.connections_for(10, 0.25) == 8
    assert arms.connections_for(20000, 0.25, hi=1024) == 1024


def test_every_arm_is_charged_its_own_processes_only() -> None:
    assert arms.arm_components(arms.ARMS["kafka"]) == ("broker", "matching", "postgres")
    assert arms.arm_components(arms.ARMS["rest"]) == ("ingest[rest]", "postgres")
    assert arms.arm_components(arms.ARMS["rest-kafka"]) == ("ingest[rest-kafka]", "broker", "matching", "postgres")


def test_accounting_reads_persisted_from_the_rows_last_seq() -> None:
    drivers = 3
    ledger = arms.Ledger(rate=10.0, total=12, start=0.0)
    ledger.produced = 9  # pings 0..8: driver k % 3, seq k // 3 + 1 (seqs 1..3 for each driver)
    for k in range(9):
        ledger.ack(k, 0.5)
    ledger.state[8] = arms.UNANSWERED  # driver 2's seq 3: never answered
    applied = np.array([3, 2, 3])  # driver 1's row stopped at seq 2: its seq 3 (k=7, acked) is missing
    acc = _account(ledger, applied, drivers)
    assert (acc["produced"], acc["persisted"], acc["lost"]) == (9, 8, 1)
    assert acc["acknowledged_but_missing"] == 1 and acc["persisted_unacknowledged"] == 1
    assert acc["rows_beyond_produced"] == 0


def test_summary_spreads_runs_per_arm_and_point() -> None:
    def run(v: float) -> dict:  # type: ignore[type-arg]
        return {
            "arm": "rest",
            "point": "equal",
            "offered_per_s": 100.0,
            "persisted_per_s": v,
            "acknowledged_per_s": v,
            "latency_ms": {"p50": 1.0, "p99": None, "n": 10, "unanswered": 1},
            "ping_to_row_ms": {"rows_written_in_last_s": 5, "p50": 2.0, "p99": 3.0},
            "cpu_ms_per_1k_pings": 5.0,
            "client_cpu_cores": {"event_loop": 0.1},
            "bottleneck": "postgres CPU (0.9 of its 1 core)",
            "accounting": {"produced": 10, "persisted": 9, "lost": 1},
        }

    s = summarize([run(1.0), run(3.0), run(2.0)])["rest"]["equal"]
    assert s["persisted_per_s"]["median"] == 2.0 and s["p99_ms"]["missing"] == 3
    assert s["bottleneck"] == {"postgres CPU": 3} and s["accounting_adds_up"]
