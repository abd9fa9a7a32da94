"""``ridehail bench ingest``: the same pings through each path, fleet size by fleet size.

For each step (drivers at 1 Hz = pings offered per second) and each path, over a measured window:
pings/s accepted by the edge or broker, pings/s applied to Postgres, client-observed latency
(from the moment a ping was due, so queueing in the client counts), errors by kind, CPU of every
server process (ingest edge, matching, broker, Postgres incl. its backends) and of the load
generator itself, and the time from ping to row (``drivers.updated_at - drivers.last_ts`` sampled
from rows written during the window). A path stops stepping once it saturates.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from ridehail.bench.experiments.environment import ALL_PATHS, CpuSet, bench_environment, machine_info
from ridehail.bench.experiments.load import HttpPathLoad, KafkaPathLoad, PathRecorder, PingMaker, paced, percentile_ms
from ridehail.common.logging import get_logger
from ridehail.domain.events import encode
from ridehail.domain.topics import DRIVER_LOCATION

log = get_logger(__name__)

DEFAULT_STEPS = (500, 1000, 2000, 5000, 10000, 20000, 50000)
SATURATED_BELOW = 0.85  # a step achieving less than 85 % of what was offered is past saturation
PATH_CODES = {"kafka": "k", "rest": "r", "rest-kafka": "rk", "rest-kafka-enqueue": "rke"}

MALFORMED_PER_STEP = 10  # half broken JSON, half valid JSON outside the service area


def _send_malformed(load: KafkaPathLoad | HttpPathLoad, maker: PingMaker) -> None:
    """Bad pings on the same path: a 4xx at the REST edge, a dead letter on the event path."""
    for i in range(MALFORMED_PER_STEP):
        if i % 2 == 0:
            body = b'{"type":"driver.location","driver_id":"broken-' + str(i).encode() + b'","seq":'
        else:
            body = _outside(maker, i)
        if isinstance(load, KafkaPathLoad):
            load.producer.produce(DRIVER_LOCATION.name, body, f"malformed-{i}")
        else:
            # a valid driver token: the edge refuses these for their bodies (400/422), not for auth
            token = load.token_for(f"malformed-{i}")
            load.sender.submit(body, (f"malformed-{i}", float("-inf")), created=None, token=token)


def _outside(maker: PingMaker, i: int) -> bytes:
    import msgspec

    ping = maker.make(i)
    return encode(msgspec.structs.replace(ping, driver_id=f"malformed-{i}", lat=59.33, lon=18.07))


PING_TO_ROW_SQL = """
SELECT extract(epoch from updated_at) * 1000 - last_ts
FROM drivers
WHERE driver_id LIKE $1 AND updated_at > now() - interval '2 seconds'
ORDER BY random() LIMIT 300
"""


async def _sample_ping_to_row(dsn: str, prefix: str, stop: asyncio.Event, out: list[float]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            with_timeout = asyncio.wait_for(stop.wait(), timeout=2.0)
            try:
                await with_timeout
            except TimeoutError:
                pass
            rows = await conn.fetch(PING_TO_ROW_SQL, prefix + "%")
            out.extend(float(r[0]) / 1000 for r in rows)
    finally:
        await conn.close()


async def _measure_step(
    env: Any, path: str, drivers: int, seconds: float, warmup: float, connections: int, drain_timeout_s: float
) -> dict[str, Any]:
    rate = float(drivers)
    prefix = f"i{drivers}{PATH_CODES[path]}-"
    maker = PingMaker(prefix, drivers)
    rec = PathRecorder(window_start=float("inf"))
    consumed0 = env.consumed() or 0.0
    if path == "kafka":
        load: KafkaPathLoad | HttpPathLoad = KafkaPathLoad(env.broker.bootstrap, maker, rec, f"bench-{prefix}")
    else:
        for k in range(drivers):  # sign every driver's token before the clock starts
            env.driver_tokens(maker.driver_id(k))
        load = HttpPathLoad(
            env.ingest_url(path),
            maker,
            rec,
            connections=connections,
            retry_s=0.0,
            max_queue_wait_s=1.0,
            token_for=env.driver_tokens,
        )
    dlq0 = env.dead_lettered()
    _send_malformed(load, maker)  # first in the queue, so a saturated client still sends them
    stop = asyncio.Event()
    pacer = asyncio.create_task(paced(rate, load.emit, stop))
    cpu = CpuSet(env)
    await asyncio.sleep(warmup)
    # -- window ----------------------------------------------------------------------------------
    rec.window_start = time.monotonic()
    c0 = env.consumed() or 0.0
    cpu0 = cpu.snapshot()
    client0 = time.process_time()
    samples: list[float] = []
    sample_stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_ping_to_row(env.postgres.dsn, prefix, sample_stop, samples))
    await asyncio.sleep(seconds)
    rec.window_end = time.monotonic()
    wall = rec.window_end - rec.window_start
    c1 = env.consumed() or 0.0
    cpu1 = cpu.snapshot()
    client_cpu = (time.process_time() - client0) / wall
    sample_stop.set()
    backlog_client = load.backlog
    stop.set()
    offered = await pacer
    await sampler
    await load.finish(10.0)
    # -- drain: how long until everything accepted reached Postgres -------------------------------
    accepted_total = rec.count("accepted")
    drain_s: float | None = 0.0
    if path != "rest":
        t0 = time.monotonic()
        target = consumed0 + accepted_total + (MALFORMED_PER_STEP if path == "kafka" else 0)
        while (env.consumed() or 0.0) < target:
            if time.monotonic() - t0 > drain_timeout_s:
                drain_s = None
                break
            await asyncio.sleep(0.25)
        else:
            drain_s = round(time.monotonic() - t0, 2)
    accepted_per_s = rec.window_accepted / wall  # pings due in the window that were accepted
    persisted_per_s = accepted_per_s if path == "rest" else (c1 - c0) / wall
    achieved = min(accepted_per_s, persisted_per_s)
    cores = {name: round((cpu1[name] - cpu0[name]) / wall, 3) for name in cpu0}
    used = {k: v for k, v in cores.items() if v >= 0.005 or not k.startswith("ingest[")}
    errors = {k: v for k, v in rec.outcomes.items() if k not in ("accepted", "rejected")}
    malformed = {
        "sent": MALFORMED_PER_STEP,
        "rejected_4xx": rec.count("rejected"),
        "dead_lettered": int(env.dead_lettered() - dlq0),
    }
    result = {
        "path": path,
        "drivers": drivers,
        "offered_per_s": round(rate, 1),
        "pings_offered": offered,
        "window_s": round(wall, 2),
        "accepted_per_s": round(accepted_per_s, 1),
        "persisted_per_s": round(persisted_per_s, 1),
        "achieved_per_s": round(achieved, 1),
        "latency_ms": {
            "p50": percentile_ms(rec.latencies, 50),
            "p99": percentile_ms(rec.latencies, 99),
            "max": percentile_ms(rec.latencies, 100),
            "n": len(rec.latencies),
        },
        "errors": errors,
        "malformed": malformed,
        "client_backlog_at_end": backlog_client,
        "drain_s": drain_s,
        "server_cpu_cores": {**used, "total": round(sum(cores.values()), 3)},
        "client_cpu_cores": round(client_cpu, 3),
        "server_cpu_ms_per_1k_pings": round(sum(cores.values()) * 1e6 / achieved, 1) if achieved > 0 else None,
        "ping_to_row_ms": {
            "p50": percentile_ms(samples, 50),
            "p99": percentile_ms(samples, 99),
            "samples": len(samples),
        },
    }
    result["saturated"] = achieved < SATURATED_BELOW * rate
    return result


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    best: dict[str, dict[str, Any]] = {}
    for s in steps:
        cur = best.get(s["path"])
        if cur is None or s["achieved_per_s"] > cur["achieved_per_s"]:
            best[s["path"]] = s
    out: dict[str, Any] = {
        p: {
            "max_achieved_per_s": s["achieved_per_s"],
            "at_drivers": s["drivers"],
            "saturated": any(x["saturated"] for x in steps if x["path"] == p),
            "server_cpu_cores_at_max": s["server_cpu_cores"]["total"],
            "server_cpu_ms_per_1k_pings_at_max": s["server_cpu_ms_per_1k_pings"],
        }
        for p, s in best.items()
    }
    if "kafka" in best and "rest" in best and best["rest"]["achieved_per_s"] > 0:
        out["ratio_kafka_to_rest"] = round(best["kafka"]["achieved_per_s"] / best["rest"]["achieved_per_s"], 2)
    if "rest-kafka" in best and "rest" in best and best["rest"]["achieved_per_s"] > 0:
        out["ratio_rest_kafka_to_rest"] = round(
            best["rest-kafka"]["achieved_per_s"] / best["rest"]["achieved_per_s"], 2
        )
    return out


async def _run(
    paths: tuple[str, ...], steps: tuple[int, ...], seconds: float, warmup: float, connections: int, env: Any
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    saturated: set[str] = set()
    for drivers in steps:
        for path in paths:
            if path in saturated:
                continue
            log.warning("bench_step", path=path, drivers=drivers)
            r = await _measure_step(env, path, drivers, seconds, warmup, connections, drain_timeout_s=90.0)
            results.append(r)
            if r["saturated"]:
                saturated.add(path)
            await asyncio.sleep(1.0)
    return results


def run_ingest_bench(
    steps: tuple[int, ...] = DEFAULT_STEPS,
    paths: tuple[str, ...] = ALL_PATHS,
    seconds: float = 8.0,
    warmup: float = 2.0,
    connections: int = 128,
    rest_db_pool: int = 64,
) -> dict[str, Any]:
    unknown = set(paths) - set(ALL_PATHS)
    if unknown:
        raise ValueError(f"unknown path(s) {sorted(unknown)}; choose from {ALL_PATHS}")
    started = time.monotonic()
    machine = machine_info()
    with bench_environment(paths, rest_db_pool=rest_db_pool) as env:
        results = asyncio.run(_run(paths, steps, seconds, warmup, connections, env))
        machine["postgres_probe"] = env.postgres_probe
    return {
        "bench": "ingest",
        "machine": machine,
        "config": {
            "steps_drivers_at_1hz": list(steps),
            "paths": list(paths),
            "window_s": seconds,
            "warmup_s": warmup,
            "http_connections": connections,
            "http_client": "raw asyncio keep-alive, one request in flight per connection, no retries",
            "max_client_queue_wait_s": 1.0,
            "kafka_producer": "acks=all, idempotent, lz4, linger 5 ms",
            "matching": "one process, location batches up to 20000 / 100 ms, one upsert statement per batch",
            "ingest_edge": f"one uvicorn worker per path; rest: asyncpg pool of {rest_db_pool}",
            "postgres": "private embedded PostgreSQL 18 (unix socket), default config",
            "broker": "private embedded tansu (memory storage)",
        },
        "steps": results,
        "summary": summarize(results),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
