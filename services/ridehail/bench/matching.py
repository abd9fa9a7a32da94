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
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from ridehail.common.health import make_server
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, RideAssigned, RideExpired, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker, temporary_database
from ridehail.harness.services import matching_process, matching_stats, rides_app, wait_until
from ridehail.harness.tokens import LocalSigner
from ridehail.matching.assignment import (
    DriverCandidate,
    RiderRequest,
    batched_assign,
    greedy_assign,
    solve,
    total_eta,
)
from ridehail.matching.eta import StraightLineEta, make_eta_model

log = get_logger(__name__)

WARMUP_REQUESTS = 5
# The dense part of the city (the road graph covers it; the bbox corners are sea and forest).
CITY = (57.675, 11.92, 57.735, 12.02)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def _random_points(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack((rng.uniform(CITY[0], CITY[2], n), rng.uniform(CITY[1], CITY[3], n)))


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def _wait_joined(port: int, timeout_s: float = 90) -> None:
    async def joined() -> bool:
        stats = await matching_stats(port)
        return bool(stats and stats["partitions"]["locations"] and stats["partitions"]["rides"])

    if not await wait_until(joined, timeout_s):
        raise RuntimeError("matching did not join its consumer groups")


# -- phase 1: ingest ---------------------------------------------------------------------------------


async def bench_ingest(
    bootstrap: str, database_url: str, drivers: int, rate: float, seconds: float, work: Path
) -> dict[str, Any]:
    port = free_port()
    proc = matching_process(bootstrap, database_url, port, work / "matching-ingest.log", log_level="WARNING")
    db = await asyncpg.connect(to_asyncpg_dsn(database_url))
    producer = EventProducer(bootstrap, "bench-ingest", **{"linger.ms": 20})
    rng = np.random.default_rng(1)
    home = _random_points(rng, drivers)
    ids = [f"bench-d{i}" for i in range(drivers)]
    lags: list[int] = []
    try:
        await _wait_joined(port)
        rounds = max(1, int(rate * seconds / drivers))
        sampling = True

        async def sample_lag() -> None:
            while sampling:
                stats = await matching_stats(port)
                if stats:
                    lags.append(int(stats["consumer_lag"]))
                await asyncio.sleep(0.5)

        # Pings are encoded before the clock starts: the load generator shares the 2 cores with
        # the broker, Postgres and matching, and should spend them on producing, not on JSON.
        payloads = [
            [
                encode(DriverLocation(driver_id=d, seq=seq, lat=float(home[i, 0]) + seq * 1e-6, lon=float(home[i, 1])))
                for i, d in enumerate(ids)
            ]
            for seq in range(1, rounds + 1)
        ]
        chunk = max(1, drivers // 20)
        sampler = asyncio.create_task(sample_lag())
        started = time.perf_counter()
        topic = DRIVER_LOCATION.name
        for r, round_payloads in enumerate(payloads):
            for c in range(0, drivers, chunk):
                for i in range(c, min(c + chunk, drivers)):
                    producer.produce(topic, round_payloads[i], ids[i])
                due = started + (r * drivers + c + chunk) / rate
                await asyncio.sleep(max(due - time.perf_counter(), 0))
        produced_s = time.perf_counter() - started
        lag_at_end_of_load = lags[-1] if lags else None
        await asyncio.get_running_loop().run_in_executor(None, producer.flush, 60)
        total = rounds * drivers

        async def applied() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM drivers WHERE last_seq = $1", rounds) == drivers)

        if not await wait_until(applied, 300):
            raise RuntimeError("pings not applied within 300 s")
        elapsed = time.perf_counter() - started
        sampling = False
        await sampler
        wrong = await db.fetchval("SELECT count(*) FROM drivers WHERE last_seq <> $1", rounds)
        return {
            "ingest_pings_per_s": round(total / elapsed, 1),
            "ingest_offered_pings_per_s": round(total / produced_s, 1),
            "ingest_pings": total,
            "ingest_drivers": drivers,
            "ingest_seconds": round(elapsed, 2),
            "ingest_max_consumer_lag": max(lags) if lags else None,
            "ingest_consumer_lag_when_load_stopped": lag_at_end_of_load,
            "ingest_lost_pings": int(wrong),
        }
    finally:
        producer.close()
        await db.close()
        _stop(proc)


async def bench_drain(bootstrap: str, database_url: str, drivers: int, rounds: int, work: Path) -> dict[str, Any]:
    """Consumer capacity without a producer competing for the CPU: the backlog is produced first,
    then matching starts and applies it (rate measured from the first applied row to the last)."""
    producer = EventProducer(bootstrap, "bench-drain", **{"linger.ms": 20})
    rng = np.random.default_rng(5)
    home = _random_points(rng, drivers)
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
        _stop(proc)


# -- phase 2: assignment latency ----------------------------------------------------------------------


async def bench_assign(
    bootstrap: str, database_url: str, drivers: int, rps: float, seconds: float, work: Path
) -> dict[str, Any]:
    import httpx

    from ridehail.common.kafka import EventProducer as Producer
    from ridehail.common.outbox import OutboxRelay

    port = free_port()
    proc = matching_process(
        bootstrap,
        database_url,
        port,
        work / "matching-assign.log",
        log_level="WARNING",
        matching_mode="greedy",
        matching_eta_model="auto",
        matching_request_timeout_s="20",
    )
    seen: dict[str, float] = {}
    outcome: dict[str, set[str]] = defaultdict(set)
    rides_of_driver: dict[str, set[str]] = defaultdict(set)

    def on_event(item: Any) -> None:
        e = item.event
        if isinstance(e, RideAssigned):
            seen.setdefault(e.ride_id, item.received_at)
            outcome[e.ride_id].add(e.driver_id)
            rides_of_driver[e.driver_id].add(e.ride_id)
        elif isinstance(e, RideExpired):
            seen.setdefault(e.ride_id, item.received_at)
            outcome[e.ride_id].add("expired")

    collector = EventCollector(bootstrap, [RIDE_EVENT.name], on_event=on_event).start()
    requested_seen: dict[str, float] = {}

    def on_request(item: Any) -> None:
        if item.event is not None:
            requested_seen.setdefault(item.event.ride_id, item.received_at)

    request_collector = EventCollector(bootstrap, [RIDE_REQUEST.name], on_event=on_request).start()
    signer = LocalSigner()
    rng = np.random.default_rng(2)
    db = await asyncpg.connect(to_asyncpg_dsn(database_url))
    stop = asyncio.Event()
    try:
        await _wait_joined(port)
        producer = EventProducer(bootstrap, "bench-fleet")
        for i, (lat, lon) in enumerate(_random_points(rng, drivers)):
            producer.produce(
                DRIVER_LOCATION.name,
                encode(DriverLocation(driver_id=f"fleet-d{i}", seq=1, lat=float(lat), lon=float(lon))),
                f"fleet-d{i}",
            )
        producer.close()
        if not await wait_until(lambda: db.fetchval("SELECT count(*) = $1 FROM drivers", drivers), 60):
            raise RuntimeError("fleet not loaded")
        if not await wait_until(lambda: _stat_equals(port, "drivers_available", drivers), 30):
            raise RuntimeError("matching index did not load the fleet")
        collector.wait_ready()
        request_collector.wait_ready()

        async with rides_app(database_url, signer) as app:
            relay = OutboxRelay(
                app.state.ctx.session_factory, Producer(bootstrap, "bench-gw-relay", **{"linger.ms": 0}), name="gw"
            )
            app.state.ctx.relay = relay
            api_port = free_port()
            server = make_server(app, "127.0.0.1", api_port)
            tasks = [asyncio.create_task(server.serve()), asyncio.create_task(relay.run(stop))]
            await wait_until(lambda: server.started, 10)
            token = signer.token("bench-rider")
            accepted: dict[str, float] = {}
            posted: dict[str, float] = {}
            errors = 0
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"}
            ) as client:
                n = int(rps * seconds)
                pickups = _random_points(rng, n + WARMUP_REQUESTS)
                dropoffs = _random_points(rng, n + WARMUP_REQUESTS)

                async def one(i: int) -> None:
                    nonlocal errors
                    body = {
                        "pickup": {"lat": float(pickups[i, 0]), "lon": float(pickups[i, 1])},
                        "dropoff": {"lat": float(dropoffs[i, 0]), "lon": float(dropoffs[i, 1])},
                    }
                    t0 = time.time()
                    r = await client.post("/api/rides", json=body)
                    if r.status_code != 202:
                        errors += 1
                        return
                    ride_id = r.json()["ride_id"]
                    posted[ride_id] = t0
                    accepted[ride_id] = time.time()

                # Warm-up (not measured): first connections, producer ids, topic metadata, code paths.
                for i in range(n, n + WARMUP_REQUESTS):
                    await one(i)
                    await wait_until(lambda: all(r in seen for r in accepted), 20)
                warmup_ids = set(accepted)
                accepted.clear()
                posted.clear()
                pending = []
                started = time.perf_counter()
                for i in range(n):
                    await asyncio.sleep(max(0.0, started + i / rps - time.perf_counter()))
                    pending.append(asyncio.create_task(one(i)))
                await asyncio.gather(*pending)
            await wait_until(lambda: all(r in seen for r in accepted), 40)
            stop.set()
            server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
        latencies = [(seen[r] - accepted[r]) * 1000 for r in accepted if r in seen and "expired" not in outcome[r]]
        from_post = [(seen[r] - posted[r]) * 1000 for r in accepted if r in seen and "expired" not in outcome[r]]
        lost = sum(1 for r in [*accepted, *warmup_ids] if r not in seen)
        expired = sum(1 for r in accepted if "expired" in outcome[r])
        double = sum(1 for d in rides_of_driver.values() if len(d) > 1) + sum(
            1 for r, ds in outcome.items() if len(ds - {"expired"}) > 1
        )
        db_double = await db.fetchval(
            "SELECT count(*) FROM (SELECT driver_id FROM rides WHERE driver_id IS NOT NULL "
            "GROUP BY driver_id HAVING count(*) > 1) AS d"
        )
        committed = {
            r["ride_id"]: r["t"]
            for r in await db.fetch(
                "SELECT ride_id, extract(epoch from assigned_at)::float8 AS t FROM rides WHERE assigned_at IS NOT NULL"
            )
        }
        ok = [r for r in accepted if r in seen and r in requested_seen and r in committed]
        hops = {
            "gateway_relay": [(requested_seen[r] - accepted[r]) * 1000 for r in ok],
            "matching": [(committed[r] - requested_seen[r]) * 1000 for r in ok],
            "matching_relay": [(seen[r] - committed[r]) * 1000 for r in ok],
        }
        (work / "assign-hops.json").write_text(
            json.dumps({r: [accepted[r], requested_seen[r], committed[r], seen[r]] for r in ok}, indent=0)
        )
        pickup_etas = await db.fetch(
            "SELECT (payload->>'eta_s')::float AS eta FROM ride_events WHERE type = 'ride.assigned'"
        )
        return {
            "assign_p50_ms": round(_percentile(latencies, 50), 1),
            "assign_p99_ms": round(_percentile(latencies, 99), 1),
            "assign_max_ms": round(max(latencies), 1) if latencies else None,
            "assign_from_post_p50_ms": round(_percentile(from_post, 50), 1),
            "assign_from_post_p99_ms": round(_percentile(from_post, 99), 1),
            "assign_requests": len(accepted),
            "assign_request_errors": errors,
            "assign_requests_per_s": rps,
            "assign_drivers": drivers,
            "assign_expired": expired,
            "assign_mean_pickup_eta_s": round(statistics.mean(r["eta"] for r in pickup_etas), 1)
            if pickup_etas
            else None,
            "assign_hops_ms": {
                hop: {"p50": round(_percentile(v, 50), 1), "p99": round(_percentile(v, 99), 1)}
                for hop, v in hops.items()
            },
            "lost": lost,
            "double_assigned": int(double + db_double),
        }
    finally:
        stop.set()
        collector.stop()
        request_collector.stop()
        await db.close()
        _stop(proc)


async def _stat_equals(port: int, key: str, value: int) -> bool:
    stats = await matching_stats(port)
    return bool(stats and stats.get(key) == value)


# -- phases 3 and 4: solver and greedy vs batched (in process, no I/O) --------------------------------


def bench_solver(riders: int = 1000, drivers: int = 2000, radius_m: float = 3000.0, repeat: int = 5) -> dict[str, Any]:
    from ridehail.matching.assignment import _cost_matrix

    rng = np.random.default_rng(3)
    rs = [RiderRequest(f"r{i}", float(a), float(b)) for i, (a, b) in enumerate(_random_points(rng, riders))]
    ds = [DriverCandidate(f"d{i}", float(a), float(b)) for i, (a, b) in enumerate(_random_points(rng, drivers))]
    eta = StraightLineEta()
    matrix_runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        cost = _cost_matrix(rs, ds, eta, radius_m)
        matrix_runs.append((time.perf_counter() - t0) * 1000)
    matrix_ms = statistics.median(matrix_runs)
    solve_ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = solve(cost, rs, ds)
        solve_ms.append((time.perf_counter() - t0) * 1000)
    road = make_eta_model("auto")
    t0 = time.perf_counter()
    road.matrix(np.array([(r.lat, r.lon) for r in rs]), np.array([(d.lat, d.lon) for d in ds]))
    road_ms = (time.perf_counter() - t0) * 1000
    return {
        "batch_solve_ms_1000x2000": round(statistics.median(solve_ms), 1),
        "batch_eta_matrix_ms_1000x2000_straight_line": round(matrix_ms, 1),
        f"batch_eta_matrix_ms_1000x2000_{road.name}": round(road_ms, 1),
        "batch_solve_assigned": len(plan),
    }


def bench_greedy_vs_batched(
    windows: int = 20, riders: int = 40, drivers: int = 60, radius_m: float = 3000.0
) -> dict[str, Any]:
    """Same input for both rules: ``windows`` independent rounds of ``riders`` requests arriving
    together among ``drivers`` available drivers (a busy hour: few spare drivers)."""
    eta = make_eta_model("auto")
    rng = np.random.default_rng(4)
    g_total = b_total = 0.0
    g_served = b_served = 0
    for w in range(windows):
        rs = [RiderRequest(f"w{w}r{i}", float(a), float(b)) for i, (a, b) in enumerate(_random_points(rng, riders))]
        ds = [DriverCandidate(f"w{w}d{i}", float(a), float(b)) for i, (a, b) in enumerate(_random_points(rng, drivers))]
        g = greedy_assign(rs, ds, eta, radius_m)
        b = batched_assign(rs, ds, eta, radius_m)
        g_total += total_eta(g)
        b_total += total_eta(b)
        g_served += len(g)
        b_served += len(b)
    g_mean = g_total / max(g_served, 1)
    b_mean = b_total / max(b_served, 1)
    return {
        "greedy_vs_batched_pickup_eta_ratio": round(g_mean / b_mean, 3) if b_mean else None,
        "greedy_mean_pickup_eta_s": round(g_mean, 1),
        "batched_mean_pickup_eta_s": round(b_mean, 1),
        "greedy_served": g_served,
        "batched_served": b_served,
        "greedy_vs_batched_setup": f"{windows} windows x {riders} riders / {drivers} drivers, {eta.name} ETA",
    }


# -- entry point ----------------------------------------------------------------------------------------


def run_bench(
    json_path: Path | None,
    admin_url: str | None,
    ingest_drivers: int = 10_000,
    ingest_rate: float = 60_000,
    ingest_seconds: float = 10.0,
    assign_drivers: int = 1000,
    assign_rps: float = 20.0,
    assign_seconds: float = 15.0,
    phases: tuple[str, ...] = ("ingest", "drain", "assign", "solver", "compare"),
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
    result["targets"] = {
        "ingest_pings_per_s": ">= 50000",
        "assign_p99_ms": "<= 50",
        "batch_solve_ms_1000x2000": "<= 100",
        "lost": "== 0",
        "double_assigned": "== 0",
    }
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["logs"] = str(work)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
