"""CPU seconds of the processes one arm of ``ridehail bench ingest`` uses (each ingest edge
worker apart), of the load generator (its event loop thread apart) and of the whole machine."""

from __future__ import annotations

import time

import psutil

from ridehail.bench.experiments.environment import BenchEnvironment
from ridehail.bench.experiments.infra import CpuMeter


class Cpu:
    """CPU seconds per component (postgres incl. backends, broker, matching, each edge worker) and
    of this process (its event loop thread apart: the single-threaded part of the load generator)."""

    def __init__(self, env: BenchEnvironment, components: tuple[str, ...]) -> None:
        self.env = env
        self.components = components
        self.meters: dict[str, CpuMeter] = {}

    def _pids(self) -> dict[str, list[int]]:
        comps = self.env.components()
        out: dict[str, list[int]] = {}
        for name in self.components:
            pids = comps[name].pids()
            if name.startswith("ingest["):  # each worker alone: each is single-threaded
                for i, pid in enumerate(sorted(pids)):
                    out[f"{name} worker {i + 1}"] = [pid]
            else:
                out[name] = pids
        return out

    def snapshot(self) -> dict[str, float]:
        out = {}
        for name, pids in self._pids().items():
            meter = self.meters.setdefault(name, CpuMeter())
            out[name] = meter.sample(pids)
        out["load generator (event loop)"] = time.thread_time()
        out["load generator (process)"] = time.process_time()
        t = psutil.cpu_times()
        out["machine busy"] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        return out
