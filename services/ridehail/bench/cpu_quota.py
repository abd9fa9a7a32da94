"""CPU budgets for benchmark children: one cgroup v1 ``cpu`` group per process with a CFS quota
(``cpu.cfs_quota_us`` per ``cpu.cfs_period_us``), so that N instances on a 2-core machine each
get the same slice of a core and throughput scaling shows instead of the machine's core count.
Needs root and the cgroup v1 ``cpu`` controller at ``/sys/fs/cgroup/cpu``; the groups are
removed afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000


class CpuQuotaUnavailable(RuntimeError):
    """The machine cannot give a process a CPU quota (not root, or no cgroup v1 cpu controller)."""


@dataclass(frozen=True)
class CpuGroup:
    path: Path
    cores: float

    def add(self, pid: int) -> None:
        """Move ``pid`` (and every thread it has or starts) into this group."""
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def throttled(self) -> dict[str, float]:
        """How often the quota held the group back (``cpu.stat``): periods, throttled periods, seconds."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        return {
            "periods": int(stat.get("nr_periods", 0)),
            "throttled_periods": int(stat.get("nr_throttled", 0)),
            "throttled_s": round(int(stat.get("throttled_time", 0)) / 1e9, 2),
        }


def check_cpu_quota() -> None:
    """Raise :class:`CpuQuotaUnavailable` with what to do when groups cannot be made here."""
    if not (CGROUP_CPU / "cpu.cfs_quota_us").is_file():
        raise CpuQuotaUnavailable(
            f"no cgroup v1 cpu controller at {CGROUP_CPU} (cpu.cfs_quota_us missing): the per-instance CPU budget "
            "needs it; run on a machine that has it, or pass --cpu-quota 0 to run without a budget"
        )
    if not os.access(CGROUP_CPU, os.W_OK):
        raise CpuQuotaUnavailable(
            f"{CGROUP_CPU} is not writable (run as root), or pass --cpu-quota 0 to run without a budget"
        )


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (path / "cgroup.procs").read_text().split():  # leftovers go back to the root group
            with contextlib.suppress(OSError):
                (CGROUP_CPU / "cgroup.procs").write_text(f"{pid}\n")
    with contextlib.suppress(OSError):
        path.rmdir()


@contextlib.contextmanager
def cpu_groups(count: int, cores: float, name: str) -> Iterator[list[CpuGroup]]:
    """``count`` fresh groups of ``cores`` CPU each (e.g. 0.25: 25 ms per 100 ms), removed on exit."""
    check_cpu_quota()
    created: list[CpuGroup] = []
    try:
        for i in range(count):
            path = CGROUP_CPU / f"{name}-{os.getpid()}-{i}"
            try:
                path.mkdir()
                (path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (path / "cpu.cfs_quota_us").write_text(f"{int(cores * PERIOD_US)}\n")
            except OSError as exc:
                _remove(path)
                raise CpuQuotaUnavailable(f"cannot create the CPU group {path}: {exc}") from exc
            created.append(CpuGroup(path, cores))
        yield created
    finally:
        for group in created:
            _remove(group.path)
