"""``ridehail bench matching --instances 1,2,4``: the same work for 1, 2 and 4 matching instances in
one consumer group, each ``ridehail serve matching`` child under the same CPU budget (a cgroup
quota, :mod:`ridehail.bench.cpu_quota`), each count on a fresh broker and database.

Per instance count, two parts:

1. **ingest**: every instance has joined; the instances are frozen (SIGSTOP) while this process
   produces a backlog of ``drivers x rounds`` pings (round after round, so the load generator
   does not compete for the CPU), then thawed (SIGCONT); rate = pings / time from thaw until every
   driver row holds its last seq. ``ingest_rows_written`` (from Postgres' table statistics) says
   how many row writes that took: batches coalesce pings of one driver, so fewer rows than pings.
2. **assign**: a parked fleet that pings every second (so it stays present) and the same seeded
   ride requests at a steady rate (the gateway's transactional request, the instances' outbox
   relays); latency = request committed -> ``RideAssigned`` seen on the topic; the mean pickup ETA
   of the assignments; rides assigned to two drivers or drivers given two rides
   (``double_assigned``) and requests never answered (``lost``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from confluent_kafka import Producer

from ridehail.bench.cpu_quota import CpuGroup, cpu_groups
from ridehail.bench.matching_support import percentile, random_points, stop_group
from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer, producer_config
from ridehail.common.logging import get_logger
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, LatLon, RideAssigned, RideExpired, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker, temporary_database
from ridehail.harness.services import matching_process, matching_stats, wait_until

log = get_logger(__name__)

WARMUP_REQUESTS = 8  # the same first requests for every count (cold paths), not measured


@dataclass(frozen=True)
class ScaleConfig:
    instances: tuple[int, ...] = (1, 2, 4)
    cpu_quota: float = 0.25  # cores per instance; 0: no budget
    drivers: int = 50_000
    rounds: int = 6
    fleet: int = 1000
    requests: int = 200
    rps: float = 10.0
    seed: int = 16


async def _balanced(ports: list[int]) -> bool:
    """Every instance holds location and ride partitions, and together they hold them all."""
    stats = [await matching_stats(p) for p in ports]
    if not all(stats):
        return False
    locations = [s["partitions"]["locations"] for s in stats if s]
    rides = [s["partitions"]["rides"] for s in stats if s]
    wanted_rides = RIDE_REQUEST.partitions + RIDE_EVENT.partitions
    return all(locations) and all(rides) and sum(locations) == DRIVER_LOCATION.partitions and sum(rides) == wanted_rides


async def _table_writes(db: asyncpg.Connection) -> tuple[int, int, int]:
    """Rows inserted, rows updated, updates that were HOT (no index touched) in ``drivers``."""
    row = await db.fetchrow(
        "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'drivers'"
    )
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


async def _settled_writes(db: asyncpg.Connection, timeout_s: float = 15.0) -> tuple[int, int, int]:
    """Table statistics reach Postgres' shared counters about once a second per backend: wait
    until they stop moving."""
    last, deadline = await _table_writes(db), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1.5)
        now = await _table_writes(db)
        if now == last:
            break
        last = now
    return last


def _signal_all(procs: list[Any], sig: int) -> None:
    for p in procs:
        os.killpg(p.pid, sig)


async def _ingest(bootstrap: str, db: asyncpg.Connection, procs: list[Any], cfg: ScaleConfig) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.seed)
    home = random_points(rng, cfg.drivers)
    ids = [f"scale-d{i}" for i in range(cfg.drivers)]
    # offline: these drivers are load, never candidates in the assignment part
    payloads = [
        [
            encode(
                DriverLocation(
                    driver_id=d, seq=r, lat=float(home[i, 0]) + r * 1e-6, lon=float(home[i, 1]), status="offline"
                )
            )
            for i, d in enumerate(ids)
        ]
        for r in range(1, cfg.rounds + 1)
    ]
    # A bare client (no delivery callbacks): the backlog must be on the broker before the frozen
    # instances' sessions time out.
    producer = Producer(producer_config(bootstrap, "bench-scale-ingest", **{"linger.ms": 20}))
    before = await _table_writes(db)
    _signal_all(procs, signal.SIGSTOP)
    try:
        produce_started = time.perf_counter()
        topic = DRIVER_LOCATION.name
        for round_payloads in payloads:
            for i, payload in enumerate(round_payloads):
                producer.produce(topic, payload, ids[i])
            producer.poll(0)
        left = await asyncio.get_running_loop().run_in_executor(None, producer.flush, 60)
        if left:
            raise RuntimeError(f"{left} backlog pings not delivered")
        produce_s = time.perf_counter() - produce_started
    finally:
        _signal_all(procs, signal.SIGCONT)
    started = time.perf_counter()

    while await db.fetchval("SELECT count(*) FROM drivers WHERE last_seq = $1", cfg.rounds) < cfg.drivers:
        if time.perf_counter() - started > 600:
            raise RuntimeError("the backlog was not applied within 600 s")
        await asyncio.sleep(0.1)  # a count over every driver row: not too often, it shares Postgres' CPU
    elapsed = time.perf_counter() - started
    inserted, updated, hot = (a - b for a, b in zip(await _settled_writes(db), before, strict=True))
    total = cfg.drivers * cfg.rounds
    return {
        "ingest_pings_per_s": round(total / elapsed, 1),
        "ingest_pings": total,
        "ingest_seconds": round(elapsed, 2),
        "ingest_backlog_produced_s": round(produce_s, 2),
        "ingest_rows_written": inserted + updated,
        "ingest_hot_update_ratio": round(hot / updated, 3) if updated else None,
    }


async def _assign(bootstrap: str, database_url: str, ports: list[int], cfg: ScaleConfig) -> dict[str, Any]:
    from ridehail.gateway.ride_requests import create_ride

    rng = np.random.default_rng(cfg.seed + 1)
    fleet = [(f"fleet-d{i}", float(a), float(b)) for i, (a, b) in enumerate(random_points(rng, cfg.fleet))]
    n = WARMUP_REQUESTS + cfg.requests
    pickups, dropoffs = random_points(rng, n), random_points(rng, n)
    seen: dict[str, float] = {}
    eta: dict[str, float] = {}
    drivers_of: dict[str, set[str]] = defaultdict(set)
    rides_of: dict[str, set[str]] = defaultdict(set)

    def on_event(item: Any) -> None:
        e = item.event
        if isinstance(e, RideAssigned):
            seen.setdefault(e.ride_id, item.received_at)
            eta.setdefault(e.ride_id, e.eta_s)
            drivers_of[e.ride_id].add(e.driver_id)
            rides_of[e.driver_id].add(e.ride_id)
        elif isinstance(e, RideExpired):
            seen.setdefault(e.ride_id, item.received_at)

    collector = EventCollector(bootstrap, [RIDE_EVENT.name], on_event=on_event).start()
    producer = EventProducer(bootstrap, "bench-scale-fleet")
    pinging = True

    async def ping_fleet() -> None:
        seq = 0
        while pinging:
            seq += 1
            for driver_id, lat, lon in fleet:
                producer.produce(
                    DRIVER_LOCATION.name,
                    encode(DriverLocation(driver_id=driver_id, seq=seq, lat=lat, lon=lon)),
                    driver_id,
                )
            await asyncio.sleep(1.0)

    lag_max = 0

    async def sample_lag() -> None:
        nonlocal lag_max
        while pinging:
            stats = [await matching_stats(p) for p in ports]
            lag_max = max(lag_max, sum(int(s.get("consumer_lag", 0)) for s in stats if s))
            await asyncio.sleep(0.5)

    pinger = asyncio.create_task(ping_fleet())
    lagger = asyncio.create_task(sample_lag())
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    committed: dict[str, float] = {}
    try:
        collector.wait_ready()

        async def fleet_present() -> bool:
            stats = await matching_stats(ports[0])
            return bool(stats and stats["drivers_available"] >= cfg.fleet)

        if not await wait_until(fleet_present, 60):
            raise RuntimeError("the fleet did not become present")

        async def one(i: int) -> str:
            pickup = LatLon(float(pickups[i, 0]), float(pickups[i, 1]))
            dropoff = LatLon(float(dropoffs[i, 0]), float(dropoffs[i, 1]))
            ride_id = await create_ride(sessions, f"bench-rider-{i}", pickup, dropoff)  # one active ride each
            committed[ride_id] = time.time()
            return ride_id

        warmup = [await one(i) for i in range(WARMUP_REQUESTS)]
        await wait_until(lambda: all(r in seen for r in warmup), 30)
        measured: list[str] = []
        started = time.perf_counter()
        for k in range(cfg.requests):
            await asyncio.sleep(max(0.0, started + k / cfg.rps - time.perf_counter()))
            measured.append(await one(WARMUP_REQUESTS + k))
        await wait_until(lambda: all(r in seen for r in measured), 60)
        await asyncio.sleep(1.0)  # a duplicate would show up now
    finally:
        pinging = False
        await pinger
        await lagger
        producer.close()
        collector.stop()
        await engine.dispose()
    latencies = [(seen[r] - committed[r]) * 1000 for r in measured if r in seen and r in eta]
    etas = [eta[r] for r in measured if r in eta]
    double = sum(1 for d in drivers_of.values() if len(d) > 1) + sum(1 for r in rides_of.values() if len(r) > 1)
    return {
        "assign_p50_ms": round(percentile(latencies, 50), 1),
        "assign_p99_ms": round(percentile(latencies, 99), 1),
        "mean_pickup_eta_s": round(statistics.mean(etas), 2) if etas else None,
        "assigned": len(etas),
        "expired": sum(1 for r in measured if r in seen and r not in eta),
        "double_assigned": double,
        "consumer_lag_max": lag_max,  # all instances' lag summed, sampled every 0.5 s under steady load
        "lost": sum(1 for r in [*warmup, *measured] if r not in seen),
    }


async def _double_booked_rows(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM (SELECT driver_id FROM rides WHERE driver_id IS NOT NULL "
            "GROUP BY driver_id HAVING count(*) > 1) AS d"
        )
    )


async def one_count(
    bootstrap: str, database_url: str, n: int, groups: list[CpuGroup] | None, cfg: ScaleConfig, work: Path
) -> dict[str, Any]:
    ports = [free_port() for _ in range(n)]
    procs = []
    for i, port in enumerate(ports):
        proc = matching_process(
            bootstrap,
            database_url,
            port,
            work / f"matching-scale-{n}-{i}.log",
            log_level="WARNING",
            matching_group_id="scale",
            matching_eta_model="auto",
            matching_session_timeout_ms="10000",  # no rebalance while frozen for the backlog
        )
        procs.append(proc)
    db = await asyncpg.connect(to_asyncpg_dsn(database_url))
    spawned = time.monotonic()
    try:
        if not await wait_until(lambda: _balanced(ports), 300):
            raise RuntimeError(f"{n} matching instances did not share the partitions within 300 s")
        # under the budget once started and balanced: Python's start-up at 0.15 core takes ~20 s,
        # which is not the work being compared
        for group, proc in zip(groups or [], procs, strict=False):
            group.add(proc.pid)
        entry: dict[str, Any] = {"instances": n, "start_and_balance_s": round(time.monotonic() - spawned, 1)}
        phase = time.monotonic()
        entry.update(await _ingest(bootstrap, db, procs, cfg))
        entry["ingest_phase_s"] = round(time.monotonic() - phase, 1)
        phase = time.monotonic()
        entry.update(await _assign(bootstrap, database_url, ports, cfg))
        entry["assign_phase_s"] = round(time.monotonic() - phase, 1)
        entry["double_assigned"] += await _double_booked_rows(db)
        if groups:
            entry["cpu_throttled"] = [g.throttled() for g in groups]
        return entry
    finally:
        await db.close()
        for p in procs:  # all at once: each takes a few seconds to leave the group
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            stop_group(p)


def run_scale(admin_url: str | None, cfg: ScaleConfig, work: Path) -> dict[str, Any]:
    scale = []
    for n in cfg.instances:
        log.warning("scale_run", instances=n, cpu_quota=cfg.cpu_quota)
        with private_broker() as bootstrap, temporary_database(admin_url) as url:
            if cfg.cpu_quota > 0:
                with cpu_groups(n, cfg.cpu_quota, "ridehail-bench-matching") as groups:
                    scale.append(asyncio.run(one_count(bootstrap, url, n, groups, cfg, work)))
            else:
                scale.append(asyncio.run(one_count(bootstrap, url, n, None, cfg, work)))
    base = scale[0]
    versus = {
        str(e["instances"]): {
            "ingest": round(e["ingest_pings_per_s"] / base["ingest_pings_per_s"], 2),
            "mean_pickup_eta": round(e["mean_pickup_eta_s"] / base["mean_pickup_eta_s"], 3)
            if e["mean_pickup_eta_s"] and base["mean_pickup_eta_s"]
            else None,
        }
        for e in scale
    }
    return {
        "scale": scale,
        "scale_vs_first": versus,
        "scale_cpu_quota_cores_per_instance": cfg.cpu_quota or None,
        "scale_setup": (
            f"per count: fresh broker and database; ingest backlog {cfg.drivers} drivers x {cfg.rounds} rounds; "
            f"assign: {cfg.fleet} parked drivers pinging every 1 s, {cfg.requests} seeded requests at {cfg.rps:g}/s "
            f"after {WARMUP_REQUESTS} warm-up ones, greedy, road-network ETA"
        ),
    }
