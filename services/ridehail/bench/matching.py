"""``ridehail bench matching``: ingest throughput, assignment latency, solver time, greedy vs
batched, lost and double-assigned, against a private embedded broker and a throw-away database.

Phases (each writes its own fields):

1. **ingest**: ``ridehail serve matching`` as a child process; this process produces pings for
   ``drivers`` drivers at ``rate`` pings/s; ingest rate = pings applied / time from the first ping
   to the last driver row at its final seq; consumer lag sampled from ``/stats``.
2. **assign**: a fresh matching child (greedy, road-network ETA) with 1,000 available drivers; the
   rides API served by uvicorn here (with its outbox relay, as in the gateway) gets ``req/s`` POSTs;
   latency = 202 received -> ``RideAssigned`` seen by a consumer of the ride event topic.
3. **solver**: ``linear_sum_assignment`` on a 1,000 x 2,000 pickup-ETA matrix.
4. **greedy vs batched**: both rules on the same riders and drivers, road-network ETAs.
5. **scale** (with ``--instances``): 1, 2, 4... instances under the same CPU budget each
   (:mod:`ridehail.bench.matching_scale`), a list ``scale`` of one object per count.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from ridehail.bench.matching_assign import bench_assign
from ridehail.bench.matching_load import PingLoad, encode_rounds
from ridehail.bench.matching_quality import bench_greedy_vs_batched, bench_solver
from ridehail.bench.matching_scale import ScaleConfig, run_scale
from ridehail.bench.matching_support import CpuMeter, child_pids, random_points, stop_group, wait_joined
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, encode
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.harness.scratch import private_broker, temporary_database
from ridehail.harness.services import matching_process, wait_until

log = get_logger(__name__)


# -- phase 1: ingest ---------------------------------------------------------------------------------


async def bench_ingest(
    bootstrap: str, database_url: str, drivers: int, rate: float, seconds: float, work: Path
) -> dict[str, Any]:
    import httpx

    port = free_port()
    proc = matching_process(bootstrap, database_url, port, work / "matching-ingest.log", log_level="WARNING")
    db = await asyncpg.connect(to_asyncpg_dsn(database_url))
    lags: list[int] = []
    try:
        await wait_joined(port)
        rounds = max(1, int(rate * seconds / drivers))
        sampling = True

        async def sample_lag() -> None:
            # one HTTP client for the whole phase (a client per sample cost the generator an SSL
            # context each time: 13 % of its py-spy samples)
            async with httpx.AsyncClient(timeout=2) as client:
                while sampling:
                    try:
                        r = await client.get(f"http://127.0.0.1:{port}/stats")
                        if r.status_code == 200:
                            lags.append(int(r.json()["consumer_lag"]))
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.5)

        # Pings are encoded before the clock starts: the load generator shares the 2 cores with
        # the broker, Postgres and matching, and should spend them on producing, not on JSON.
        load = PingLoad(bootstrap, "bench-d", encode_rounds("bench-d", drivers, rounds, seed=1), rate)
        own_backend = await db.fetchval("SELECT pg_backend_pid()")

        async def processes() -> dict[str, list[int]]:
            backends = await db.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> $1", own_backend
            )
            return {
                "matching": [proc.pid],
                "postgres_backends": [int(r["pid"]) for r in backends],
                "broker": child_pids("tansu"),
                "load_generator": [os.getpid()],
            }

        cpu = CpuMeter()
        cpu.start(await processes())
        sampler = asyncio.create_task(sample_lag())
        started = time.perf_counter()
        load.start()
        while load.produced_s is None and load.alive():
            await asyncio.sleep(0.02)
        lag_at_end_of_load = lags[-1] if lags else None
        await asyncio.get_running_loop().run_in_executor(None, load.join, 120)
        assert load.produced_s is not None
        total = rounds * drivers

        async def applied() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM drivers WHERE last_seq = $1", rounds) == drivers)

        if not await wait_until(applied, 300):
            raise RuntimeError("pings not applied within 300 s")
        elapsed = time.perf_counter() - started
        cpu_s = cpu.stop(await processes())
        sampling = False
        await sampler
        wrong = await db.fetchval("SELECT count(*) FROM drivers WHERE last_seq <> $1", rounds)
        return {
            "ingest_pings_per_s": round(total / elapsed, 1),
            "ingest_offered_pings_per_s": round(total / load.produced_s, 1),
            "ingest_pings": total,
            "ingest_drivers": drivers,
            "ingest_seconds": round(elapsed, 2),
            "ingest_max_consumer_lag": max(lags) if lags else None,
            "ingest_consumer_lag_when_load_stopped": lag_at_end_of_load,
            "ingest_lost_pings": int(wrong),
            # CPU seconds each process used from the first ping produced to the last row applied
            # (``ingest_seconds``); "load_generator" is this whole process, the lag sampler included
            "ingest_cpu_s": cpu_s,
            "ingest_cpu_us_per_ping": {k: round(v / total * 1e6, 2) for k, v in cpu_s.items() if v is not None},
        }
    finally:
        await db.close()
        stop_group(proc)


async def bench_drain(bootstrap: str, database_url: str, drivers: int, rounds: int, work: Path) -> dict[str, Any]:
    """Consumer capacity without a producer competing for the CPU: the backlog is produced first,
    then matching starts and applies it (rate measured from the first applied row to the last)."""
    producer = EventProducer(bootstrap, "bench-drain", **{"linger.ms": 20})
    rng = np.random.default_rng(5)
    home = random_points(rng, drivers)
    for seq in range(1, rounds + 1):
        for i in range(drivers):
            ping = DriverLocation(driver_id=f"drain-d{i}", seq=seq, lat=float(home[i, 0]), lon=float(home[i, 1]))
            producer.produce(DRIVER_LOCATION.name, encode(ping), ping.driver_id)
    await asyncio.get_running_loop().run_in_executor(None, producer.flush, 60)
    producer.close()
    total = drivers * rounds
    port = free_port()
    proc = matching_process(bootstrap, database_url, port, work / "matching-drain.log", log_level="WARNING")
    db = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        first_at = None
        first_applied = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            applied = int(await db.fetchval("SELECT coalesce(sum(last_seq), 0) FROM drivers"))
            now = time.perf_counter()
            if applied and first_at is None:
                first_at, first_applied = now, applied
            if applied >= total:
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("backlog not applied within 300 s")
        assert first_at is not None
        elapsed = max(now - first_at, 1e-3)
        # sum(last_seq) counts pings applied; coalescing skips superseded ones, which still count as done
        return {
            "ingest_drain_pings_per_s": round((total - first_applied) / elapsed, 1),
            "ingest_drain_pings": total,
        }
    finally:
        await db.close()
        stop_group(proc)


# -- entry point ----------------------------------------------------------------------------------------


def run_bench(
    json_path: Path | None,
    admin_url: str | None,
    ingest_drivers: int = 10_000,
    ingest_rate: float = 150_000,
    ingest_seconds: float = 10.0,
    assign_drivers: int = 1000,
    assign_rps: float = 20.0,
    assign_seconds: float = 15.0,
    phases: tuple[str, ...] = ("ingest", "drain", "assign", "solver", "compare"),
    scale: ScaleConfig | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "matching",
        "cpu_count": os.cpu_count(),
        "started_at": time.time(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    work = Path(tempfile.mkdtemp(prefix="ridehail-bench-matching-"))
    if "solver" in phases:
        result.update(bench_solver())
    if "compare" in phases:
        result.update(bench_greedy_vs_batched())
    if "ingest" in phases:
        with private_broker() as bootstrap, temporary_database(admin_url) as url:
            result.update(asyncio.run(bench_ingest(bootstrap, url, ingest_drivers, ingest_rate, ingest_seconds, work)))
    if "drain" in phases:
        with private_broker() as bootstrap, temporary_database(admin_url) as url:
            result.update(asyncio.run(bench_drain(bootstrap, url, ingest_drivers, 30, work)))
    if "assign" in phases:
        with private_broker() as bootstrap, temporary_database(admin_url) as url:
            result.update(asyncio.run(bench_assign(bootstrap, url, assign_drivers, assign_rps, assign_seconds, work)))
    if scale is not None:
        result.update(run_scale(admin_url, scale, work))
    result["targets"] = {
        "ingest_pings_per_s": ">= 100000",
        "assign_p99_ms": "<= 50",
        "batch_solve_ms_1000x2000": "<= 100",
        "lost": "== 0",
        "double_assigned": "== 0",
    }
    if scale is not None:
        result["targets"]["scale"] = (
            "4 instances vs 1: mean_pickup_eta_s within 5 %, ingest >= 3x; double_assigned == 0, lost == 0"
        )
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["logs"] = str(work)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
