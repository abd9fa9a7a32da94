"""The benchmark's CPU budget refuses clearly when the machine cannot give one (the groups
themselves are exercised for real by the bench layer, ``tests/bench``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridehail.bench import cpu_quota


def test_no_cgroup_cpu_controller_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_quota, "CGROUP_CPU", tmp_path / "cpu")
    with pytest.raises(cpu_quota.CpuQuotaUnavailable, match="no cgroup v1 cpu controller.*--cpu-quota 0"):
        cpu_quota.check_cpu_quota()
