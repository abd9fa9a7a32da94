"""The bench's record of the machine (CPU shares from /proc/stat, steal included) and the
``--set NAME=VALUE`` settings ``bench stack`` passes to the stack."""

from __future__ import annotations

import pytest

from ridehail.bench.machine import PROC_STAT, CpuTimes, cpu_shares, speed_probe_ms
from ridehail.bench.stack import parse_settings

STAT_START = "cpu  1000 0 500 8000 100 0 50 350 40 0\ncpu0 500 0 250 4000 50 0 25 175 20 0\nintr 1 2 3\n"
STAT_END = "cpu  1600 0 700 8700 200 0 50 750 90 0\ncpu0 800 0 350 4350 100 0 25 375 45 0\nintr 4 5 6\n"


def test_cpu_times_take_the_aggregate_line_and_leave_guest_time_out() -> None:
    t = CpuTimes.parse(STAT_START)
    assert t == CpuTimes(total=1000 + 500 + 8000 + 100 + 50 + 350, idle=8100, steal=350)


def test_cpu_shares_split_busy_idle_and_steal() -> None:
    shares = cpu_shares(CpuTimes.parse(STAT_START), CpuTimes.parse(STAT_END))
    # span 600 + 200 + 700 + 100 (iowait) + 400 = 2,000 ticks: 800 busy, 800 idle (iowait is idle), 400 stolen
    assert shares == {"cpu_busy_share": 0.4, "cpu_steal_share": 0.2}


def test_cpu_shares_are_empty_without_two_readings() -> None:
    t = CpuTimes.parse(STAT_START)
    assert cpu_shares(None, t) == {} and cpu_shares(t, None) == {} and cpu_shares(t, t) == {}
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        CpuTimes.parse("intr 1 2 3\n")


def test_an_old_kernel_without_steal_counts_none() -> None:
    assert CpuTimes.parse("cpu  10 0 5 80 5\n") == CpuTimes(total=100, idle=85, steal=0)


@pytest.mark.skipif(not PROC_STAT.exists(), reason="no /proc/stat (not Linux): the bench records no CPU shares")
def test_this_machine_can_be_read() -> None:
    t = CpuTimes.read()
    assert t is not None and t.total > t.idle >= 0


def test_settings_are_known_ridehail_settings_the_bench_does_not_own() -> None:
    assert parse_settings(["RIDEHAIL_PING_SLOTS=10", "RIDEHAIL_FRAME_INTERVAL_MS = 50"]) == {
        "RIDEHAIL_PING_SLOTS": "10",
        "RIDEHAIL_FRAME_INTERVAL_MS": "50",
    }
    assert parse_settings(["RIDEHAIL_GPS_NOISE_M="]) == {"RIDEHAIL_GPS_NOISE_M": ""}
    for bad, reason in (
        ("RIDEHAIL_PING_SLOTS", "NAME=VALUE"),
        ("=3", "NAME=VALUE"),
        ("PATH=/bin", "is none"),
        ("RIDEHAIL_PING_SLOT=10", "is none"),  # a misspelt name fails before the stack starts
        ("ridehail_ping_slots=10", "is none"),
        ("RIDEHAIL_BROKER=kafka", "chosen by the bench"),
        ("RIDEHAIL_KAFKA_BOOTSTRAP=127.0.0.1:9092", "chosen by the bench"),
        ("RIDEHAIL_DRIVERS=5", "chosen by the bench"),  # --drivers decides
        ("RIDEHAIL_RIDERS_PER_MIN=60", "chosen by the bench"),  # the bench requests the rides
        ("RIDEHAIL_STATE_DIR=/tmp/x", "chosen by the bench"),
        ("RIDEHAIL_GATEWAY_PORT=1", "chosen by the bench"),
        ("RIDEHAIL_DATABASE_URL=postgresql://x", "chosen by the bench"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_settings([bad])


def test_the_speed_probe_times_its_loop() -> None:
    probe = speed_probe_ms(repeats=1)
    assert 0 < probe < 60_000
