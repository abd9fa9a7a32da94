"""``ridehail bench scale``: claim (3), "events scale independently", measured.

1, 2 and 4 matching instances in one consumer group over the location topic's partitions, each
instance held to the same CPU budget (a cgroup v1 quota), every count repeated in an interleaved
order on a fresh broker and database. Per run (see :mod:`ridehail.bench.matching_scale`):
backlog throughput (pings applied to Postgres per second), consumer lag under a steady load,
assignment latency and quality (mean pickup ETA of the same seeded requests), rides assigned
twice and requests never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ridehail.bench.cpu_quota import cpu_groups
from ridehail.bench.experiments.environment import machine_info
from ridehail.bench.experiments.stats import interleaved_schedule, spread
from ridehail.bench.matching_scale import ScaleConfig, one_count
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.harness.scratch import private_broker, scratch_database, scratch_server

METRICS = (
    "ingest_pings_per_s",
    "consumer_lag_max",
    "assign_p50_ms",
    "assign_p99_ms",
    "mean_pickup_eta_s",
    "double_assigned",
    "lost",
)


def _one_run(admin_dsn: str, n: int, cfg: ScaleConfig, work: Path) -> dict[str, Any]:
    with private_broker() as bootstrap, scratch_database(admin_dsn, "ridehail_scale") as url:
        if cfg.cpu_quota > 0:
            with cpu_groups(n, cfg.cpu_quota, "ridehail-bench-scale") as groups:
                return asyncio.run(one_count(bootstrap, url, n, groups, cfg, work))
        return asyncio.run(one_count(bootstrap, url, n, None, cfg, work))


def summarize(runs: list[dict[str, Any]], instances: tuple[int, ...]) -> dict[str, Any]:
    by_count = {str(n): {m: spread(r.get(m) for r in runs if r["instances"] == n) for m in METRICS} for n in instances}
    base = by_count[str(instances[0])]["ingest_pings_per_s"]["median"]
    speedup = {}
    for n in instances:
        med = by_count[str(n)]["ingest_pings_per_s"]["median"]
        speedup[str(n)] = round(med / base, 2) if med and base else None
    return {"by_instances": by_count, "ingest_speedup_vs_first": speedup}


def run_scale_study(admin_url: str | None, cfg: ScaleConfig, repeats: int, work: Path | None = None) -> dict[str, Any]:
    if cfg.cpu_quota > 0 and os.geteuid() != 0:
        raise ValueError("--cpu-quota needs root (a cgroup v1 CPU quota); use --cpu-quota 0 for no budget")
    started = time.monotonic()
    machine = machine_info()
    schedule = interleaved_schedule([str(n) for n in cfg.instances], repeats)
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        folder = work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ridehail-scale-")))
        admin_dsn = admin_url or stack.enter_context(scratch_server())  # one server, a fresh database per run
        for i, (rep, arm) in enumerate(schedule, 1):
            n = int(arm)
            t0 = time.monotonic()
            entry = _one_run(admin_dsn, n, cfg, folder)
            entry["repeat"] = rep
            entry["order"] = i
            runs.append(entry)
            print(
                f"[scale {i}/{len(schedule)}] repeat {rep + 1}, {n} instance(s): "
                f"{entry['ingest_pings_per_s']:,.0f} pings/s, lag max {entry['consumer_lag_max']}, "
                f"ETA {entry['mean_pickup_eta_s']} s ({time.monotonic() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    load1, load5, _ = os.getloadavg()
    machine["load_avg_at_end"] = [round(load1, 2), round(load5, 2)]
    return {
        "bench": "scale",
        "machine": machine,
        "config": {
            "instances": list(cfg.instances),
            "repeats": repeats,
            "cpu_quota_cores_per_instance": cfg.cpu_quota or None,
            "location_partitions": DRIVER_LOCATION.partitions,
            "backlog": f"{cfg.drivers} drivers x {cfg.rounds} pings, produced while the instances are frozen",
            "steady_load": f"{cfg.fleet} parked drivers pinging every 1 s; {cfg.requests} seeded ride requests "
            f"at {cfg.rps:g}/s (greedy, road-network ETA)",
            "order": "every count once per repeat, in a shuffled order (interleaved)",
        },
        "runs": runs,
        "summary": summarize(runs, cfg.instances),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
