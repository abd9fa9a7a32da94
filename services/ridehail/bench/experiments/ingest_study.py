"""``ridehail bench ingest``: every arm (:mod:`ridehail.bench.experiments.ingest_arms`) at the same
offered rates, each point repeated in an interleaved order.

Points: ``equal`` (a rate every arm sustains: latency) and ``capacity`` (a rate above every arm's
capacity: the rate applied to Postgres, and the resource that saturated). A run offers its rate
open-loop for ``warmup + seconds``; only the pings due in the measured window count for rates and
latency, every ping of the run counts for the accounting.

Accounting (read from Postgres after the drain, not inferred): the drivers table keeps the newest
position per driver (newest seq wins), so after the run driver ``i``'s row holds ``last_seq``; a
ping of driver ``i`` with seq <= that is *persisted* (it, or a newer ping of the same driver that
replaced it, is in the row; an older ping can never be applied after a newer one), every other
produced ping is *lost*. ``produced = persisted + lost`` per run; ``acknowledged_but_missing``
counts acknowledged pings whose seq is above their row's ``last_seq`` (must be 0). The persisted
rate is the growth of ``sum(last_seq - base)`` over the window, read from Postgres at both ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import asyncpg
import numpy as np

from ridehail.bench.experiments import ingest_arms as arms
from ridehail.bench.experiments.arm_cpu import Cpu
from ridehail.bench.experiments.environment import BenchEnvironment, bench_environment, load_average, machine_info
from ridehail.bench.experiments.infra import http_get
from ridehail.bench.experiments.ingest_summary import summarize
from ridehail.bench.experiments.stats import bottleneck, interleaved_schedule, uncensored_percentiles_ms
from ridehail.common.logging import get_logger

log = get_logger(__name__)

MALFORMED_PER_RUN = 10
INGEST_BROKER = "embedded tansu (memory storage), one node"  # bench_environment's default broker
SEQ_BASE_STEP = 1_000_000  # a run's seqs start above every seq of the previous runs


async def _applied(conn: asyncpg.Connection, pings: arms.Pings) -> np.ndarray:
    """Per driver: how many of this run's seqs its row reflects (last_seq - base, at least 0)."""
    rows = await conn.fetch("SELECT driver_id, last_seq FROM drivers WHERE driver_id = ANY($1)", pings.ids)
    by_id = {r[0]: r[1] for r in rows}
    return np.array([max(0, by_id.get(d, 0) - pings.base) for d in pings.ids], dtype=np.int64)


PING_TO_ROW_SQL = """
SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d)
FROM (SELECT extract(epoch FROM updated_at) * 1000 - last_ts AS d FROM drivers
      WHERE driver_id = ANY($1) AND updated_at > now() - interval '1 second') AS w
"""


async def _ping_to_row(conn: asyncpg.Connection, pings: arms.Pings) -> dict[str, Any]:
    """rest: about the answer's latency; event paths: how far the row trails the broker's ack."""
    n, p50, p99 = await conn.fetchrow(PING_TO_ROW_SQL, pings.ids)
    return {"rows_written_in_last_s": int(n), "p50": _ms(p50), "p99": _ms(p99)}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(float(v), 1)


def _account(ledger: arms.Ledger, applied: np.ndarray, drivers: int) -> dict[str, int]:
    n = ledger.produced
    k = np.arange(n)
    seq = k // drivers + 1
    persisted = seq <= applied[k % drivers]
    acked = ledger.state[:n] == arms.ACKED
    produced_per_driver = np.bincount(k % drivers, minlength=drivers)
    return {
        "produced": int(n),
        "persisted": int(persisted.sum()),
        "lost": int(n - persisted.sum()),
        "acknowledged": int(acked.sum()),
        "acknowledged_but_missing": int((acked & ~persisted).sum()),
        "persisted_unacknowledged": int((~acked & persisted).sum()),
        "rows_beyond_produced": int((applied > produced_per_driver).sum()),  # a row ahead of the load: 0
    }


async def _drain(
    conn: asyncpg.Connection, ledger: arms.Ledger, pings: arms.Pings, timeout_s: float, settle_s: float
) -> float | None:
    """Until every acknowledged ping is in Postgres and nothing changed for ``settle_s``."""
    t0 = time.monotonic()
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        applied = await _applied(conn, pings)
        acc = _account(ledger, applied, pings.drivers)
        total = int(applied.sum())
        if total != last:
            last, stable_since = total, time.monotonic()
        if acc["acknowledged_but_missing"] == 0 and time.monotonic() - stable_since >= settle_s:
            return round(time.monotonic() - t0, 2)
        await asyncio.sleep(0.25)
    return None


async def run_once(
    env: BenchEnvironment,
    arm_name: str,
    point: str,
    rate: float,
    opts: dict[str, Any],
    run_no: int,
    conn: asyncpg.Connection,
    pings: arms.Pings,
) -> dict[str, Any]:
    t_run = time.monotonic()
    arm = arms.ARMS[arm_name]
    budget = float(opts["budget_s"])
    pings.base = (run_no + 1) * SEQ_BASE_STEP
    total = int(rate * (opts["warmup_s"] + opts["seconds"] + 5)) + 1000  # room for a pacer that runs late
    start = time.monotonic() + 0.2
    ledger = arms.Ledger(rate, total, start)
    connections = None
    dlq0 = env.dead_lettered()
    if arm.edge is None:
        devices = int(opts["device_producers"]) if arm_name == "kafka-per-device" else 0
        load: arms.KafkaLoad | arms.HttpLoad = arms.KafkaLoad(env.broker.bootstrap, pings, ledger, budget, devices)
        refused = load.send_malformed(MALFORMED_PER_RUN)
    else:
        batch = int(opts["batch_size"]) if arm_name == "rest-batch" else 1
        per_request = min(batch, max(1.0, rate * opts["batch_linger_s"])) if batch > 1 else 1
        connections = arms.connections_for(rate / per_request, opts["expected_latency_s"], hi=opts["max_connections"])
        path = "/ingest/pings" if batch > 1 else "/ingest/ping"
        load = arms.HttpLoad(
            env.edges[arm_name].base_url + path,
            pings,
            ledger,
            connections=connections,
            budget_s=budget,
            token_for=env.driver_tokens,
            batch_size=batch,
            linger_s=opts["batch_linger_s"],
            batch_token=opts["admin_token"],
        )
        refused = await load.send_malformed(MALFORMED_PER_RUN)
    cpu = Cpu(env, arms.arm_components(arm))
    stop = asyncio.Event()
    pacer = asyncio.create_task(_paced(ledger, total, load.emit, stop))
    await asyncio.sleep(max(0.0, start - time.monotonic()) + opts["warmup_s"])
    w0 = time.monotonic()
    applied0 = int((await _applied(conn, pings)).sum())
    cpu0 = cpu.snapshot()
    await asyncio.sleep(opts["seconds"])
    cpu1 = cpu.snapshot()
    applied1 = int((await _applied(conn, pings)).sum())
    ping_to_row = await _ping_to_row(conn, pings)
    w1 = time.monotonic()
    stop.set()
    await pacer
    await load.finish(budget)
    drain_s = await _drain(conn, ledger, pings, opts["drain_timeout_s"], opts["settle_s"])
    applied = await _applied(conn, pings)
    wall = w1 - w0
    k0, k1 = int(np.ceil((w0 - start) * rate)), int(np.ceil((w1 - start) * rate))
    window = slice(k0, min(k1, ledger.produced))
    acked = ledger.state[window] == arms.ACKED
    lat = ledger.latency[window][acked]
    in_budget = lat[lat <= budget]
    unanswered = int(window.stop - window.start - len(in_budget))
    cores = {name: round((cpu1[name] - cpu0[name]) / wall, 3) for name in cpu0}
    client = {"event_loop": cores.pop("load generator (event loop)"), "process": cores.pop("load generator (process)")}
    machine_busy = cores.pop("machine busy")
    server_total = sum(cores.values())
    # the machine is shared: what other processes used in the window competes for the same cores
    others = round(max(0.0, machine_busy - server_total - client["process"]), 3)
    persisted_per_s = (applied1 - applied0) / wall
    single = [n for n in cores if n.startswith("ingest[") or n == "matching"] + ["load generator (event loop)"]
    named = bottleneck(
        {
            **cores,
            "load generator (event loop)": client["event_loop"],
            "load generator (other threads)": max(0.0, client["process"] - client["event_loop"]),
            "other processes on the machine": others,
        },
        single,
        os.cpu_count() or 1,
    )
    accounting = _account(ledger, applied, pings.drivers)
    dead = int(env.dead_lettered() - dlq0) if arm.edge is None else 0
    return {
        "arm": arm_name,
        "point": point,
        "repeat": opts["_repeat"],
        "run": run_no,
        "offered_per_s": rate,
        "window_s": round(wall, 2),
        "http_connections": connections,
        "pings_due_in_window": window.stop - window.start,
        "schedule_truncated": ledger.produced >= total,  # the pacer hit its buffer: offered less than asked
        "acknowledged_per_s": round(float(acked.sum()) / wall, 1),
        "persisted_per_s": round(persisted_per_s, 1),
        "latency_ms": uncensored_percentiles_ms(in_budget, unanswered, (50, 99, 99.9)),
        "ping_to_row_ms": ping_to_row,  # updated_at - the ping's ts, rows written in the window's last second
        "errors": dict(ledger.errors),
        "expired_in_client": getattr(load, "expired_in_client", 0),
        "accounting": accounting,
        "malformed": {"sent": MALFORMED_PER_RUN, "rejected_4xx": refused, "dead_lettered": dead},
        "drain_s": drain_s,
        "server_cpu_cores": {**cores, "total": round(server_total, 3)},
        "client_cpu_cores": client,
        "machine_cpu_cores": {"busy": round(machine_busy, 3), "other_processes": others},
        "cpu_ms_per_1k_pings": round(server_total * 1e6 / persisted_per_s, 1) if persisted_per_s > 0 else None,
        "bottleneck": named,
        "load_avg": load_average(),
        "run_s": round(time.monotonic() - t_run, 2),
    }


async def _paced(ledger: arms.Ledger, total: int, emit: Any, stop: asyncio.Event) -> int:
    k = 0
    while not stop.is_set():
        elapsed = time.monotonic() - ledger.start  # ping k goes out at its due time start + k / rate
        due = min(total, int(ledger.rate * elapsed) + 1) if elapsed >= 0 else 0
        while k < due:
            emit(k, ledger.start + k / ledger.rate)
            k += 1
        await asyncio.sleep(0.002)
    return k


async def _warm_edges(env: BenchEnvironment, pings: arms.Pings, names: list[str], workers: dict[str, int]) -> None:
    """Before the clock: every edge has verified every driver's token once (its cache), every
    worker of a multi-worker edge answers, and every driver has a row (seq 1)."""
    for name in names:
        want = workers.get(name, 1)
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while len(seen) < want and time.monotonic() < deadline:
            status, body = await asyncio.to_thread(http_get, env.edges[name].base_url + "/stats", 2.0)
            if status == 200:
                seen.add(int(json.loads(body)["pid"]))
        if len(seen) < want:
            raise RuntimeError(f"{name}: only {len(seen)} of {want} workers answered; see {env.edges[name].log_file}")
        if name == "rest-batch":
            continue
        ledger = arms.Ledger(1000.0, pings.drivers, time.monotonic())
        load = arms.HttpLoad(
            env.edges[name].base_url + "/ingest/ping",
            pings,
            ledger,
            connections=32,
            budget_s=10.0,
            token_for=env.driver_tokens,
        )
        for k in range(pings.drivers):
            load.emit(k, 0.0)
        await load.finish(10.0)


def run_ingest_study(
    arms_wanted: tuple[str, ...] = arms.DEFAULT_ARMS,
    repeats: int = 5,
    rate_equal: float = 300.0,
    rate_capacity: float = 50000.0,
    seconds: float = 3.0,
    warmup: float = 1.0,
    drivers: int = 2000,
    budget_s: float = 5.0,
    batch_size: int = 100,
    batch_linger_ms: float = 10.0,
    group_commit_ms: float = 5.0,
    device_producers: int = 16,
    rest_db_pool: int = 32,
    max_connections: int = 1024,
    settle_s: float = 1.0,
    progress: Any = None,
) -> dict[str, Any]:
    unknown = set(arms_wanted) - set(arms.ARMS)
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)}; choose from {sorted(arms.ARMS)}")
    if repeats < 1 or rate_equal <= 0 or rate_capacity <= 0 or seconds <= 0 or drivers < 1:
        raise ValueError("repeats, rates, seconds and drivers must be positive")
    started = time.monotonic()
    machine = machine_info()
    edges = {}
    for name in arms_wanted:
        arm = arms.ARMS[name]
        if arm.edge is not None:
            extra = {"RIDEHAIL_INGEST_GROUP_COMMIT_MS": str(group_commit_ms)} if name == "rest-group-commit" else {}
            edges[name] = {**arm.edge, **extra, "RIDEHAIL_INGEST_TIMEOUT_S": str(budget_s)}
    workers = {n: int(e.get("RIDEHAIL_INGEST_WORKERS", "1")) for n, e in edges.items()}
    points = {"equal": rate_equal, "capacity": rate_capacity}
    schedule = [(r, arm, point) for r, arm in interleaved_schedule(arms_wanted, repeats) for point in points]
    opts: dict[str, Any] = {
        "budget_s": budget_s,
        "warmup_s": warmup,
        "seconds": seconds,
        "batch_size": batch_size,
        "batch_linger_s": batch_linger_ms / 1000,
        "device_producers": device_producers,
        "expected_latency_s": 0.25,
        "max_connections": max_connections,
        "drain_timeout_s": 30.0,
        "settle_s": settle_s,
    }
    with bench_environment(("kafka",), prefix="ridehail-ingest-", rest_db_pool=rest_db_pool, extra_edges=edges) as env:
        opts["admin_token"] = env.driver_tokens.signer.token("bench-aggregator", "admin")
        pings = arms.Pings("bi", drivers)

        async def main() -> list[dict[str, Any]]:
            await _warm_edges(env, pings, list(edges), workers)
            conn = await asyncpg.connect(env.postgres.dsn)
            out = []
            try:
                for n, (repeat, arm_name, point) in enumerate(schedule):
                    opts["_repeat"] = repeat
                    run = await run_once(env, arm_name, point, points[point], opts, n + 1, conn, pings)
                    out.append(run)
                    if progress is not None:
                        progress(n + 1, len(schedule), run)
            finally:
                await conn.close()
            return out

        setup_s = round(time.monotonic() - started, 1)
        runs = asyncio.run(main())
        machine["postgres_probe"] = env.postgres_probe
    machine["load_avg_at_end"] = load_average()
    config = {
        "arms": {a: arms.ARMS[a].meaning for a in arms_wanted},
        "cpu_charged_to": {a: list(arms.arm_components(arms.ARMS[a])) for a in arms_wanted},
        "points_offered_per_s": points,
        "repeats": repeats,
        "order": "interleaved: every arm once per repeat, shuffled per repeat (seed 1); both points per arm",
        "window_s": seconds,
        "warmup_s": warmup,
        "drivers": drivers,
        "ping_rate_per_driver_hz": {p: r / drivers for p, r in points.items()},
        "answer_budget_s": budget_s,
        "budget_meaning": "HTTP request time-out = edge timeout = producer message.timeout.ms; a ping due in the "
        "window not answered within it (incl. waiting in the client) is unanswered and counts in the percentiles",
        "http_connections": "ceil(requests/s x 0.25 s), at least 8, at most max_http_connections; per run in runs[]",
        "max_http_connections": max_connections,
        "http_client": "raw asyncio keep-alive, one request in flight per connection, no retries",
        "rest_batch": {"batch_size": batch_size, "linger_ms": batch_linger_ms, "token": "admin (trusted aggregator)"},
        "rest_group_commit_ms": group_commit_ms,
        "kafka_shared_producer": "one producer for all devices: acks=all, idempotent, lz4, linger.ms=5, "
        "batch.num.messages=10000",
        "kafka_per_device": {
            "producers": device_producers,
            "config": "acks=all, idempotent, linger.ms=0, batch.num.messages=1",
            "cap": "device d -> producer d % producers; each producer sends one record per produce request "
            "(nothing batched across devices), up to 5 in flight. Measured on this 2-core machine (shared, load "
            "5-7, one run each): with 16 producers the capacity run behaved (2,298 pings/s persisted, 10.8 s); "
            "with 64 it took 26 s instead of ~11 and persisted 156 pings/s while the load generator's event loop "
            "used 0.05 cores (waiting, not computing; cause not found), so the default is 16",
            "broker_note": "tansu answered PRODUCER_FENCED to some per-device idempotent producers once records "
            "timed out at the capacity point; those pings are counted as failed (lost unless persisted)",
        },
        "rest_db_pool": rest_db_pool,
        "broker": INGEST_BROKER,
        "malformed_per_run": MALFORMED_PER_RUN,
        "drain": f"until every acknowledged ping is in Postgres and the rows did not change for {settle_s} s "
        "(at most 30 s; drain_s null if not)",
        "accounting": "per driver, rows' last_seq after the drain; persisted = seq <= last_seq (see module doc)",
    }
    return {
        "bench": "ingest",
        "machine": machine,
        "config": config,
        "runs": runs,
        "summary": summarize(runs),
        "elapsed_s": round(time.monotonic() - started, 1),
        "setup_s": setup_s,
    }
