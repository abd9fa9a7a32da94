"""``ridehail bench outage``: steady load on every path at once, then one component stops for
``outage_s`` and comes back: the consumer side (matching), Postgres, or the broker itself.

Every ping in this bench is the only ping of its own driver id, so each lands in its own row and
the loss count is exact: ``lost = produced - rows``, ``lost_after_accept = accepted - rows`` (a
ping the client was told was taken, that never arrived). Backlog is what was produced and is
neither in Postgres nor given up yet (broker topic, producer queue, client retry queue).
Catch-up is the time from the component's return until that backlog is back to its pre-outage
level. The stall of each path is the longest any accepted ping waited for its answer or ack
(``producer_stall_s``, from the moment it was due) and the longest stretch without any accepted
ping at all (``no_accept_s``).

``--broker tansu`` (the embedded broker: in memory, single node) runs the scenarios ``consumer``,
``postgres`` and ``broker``; ``--broker kafka`` (a local 3-node Apache Kafka cluster, RF 3,
``min.insync.replicas=2``) runs the cluster faults of :mod:`ridehail.bench.experiments.cluster_infra`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg

from ridehail.bench.experiments.cluster_infra import KAFKA_SCENARIOS, KAFKA_STOPS, PrivateCluster
from ridehail.bench.experiments.environment import ALL_PATHS, BenchEnvironment, bench_environment, machine_info
from ridehail.bench.experiments.load import HttpPathLoad, KafkaPathLoad, PathRecorder, PingMaker, paced
from ridehail.common.logging import get_logger

log = get_logger(__name__)

SCENARIOS = ("consumer", "postgres", "broker")
BROKER_SCENARIOS = {"tansu": SCENARIOS, "kafka": KAFKA_SCENARIOS}
BROKER_LABELS = {
    "tansu": "embedded tansu 0.6: in memory, a single node (a restart forgets every record and offset)",
    "kafka": "local Apache Kafka cluster: 3 nodes, replication factor 3, min.insync.replicas=2, durable",
}
# Row prefixes per scenario (distinct, so one database can hold every scenario's rows).
SCENARIO_TAGS = {
    "consumer": "oc",
    "postgres": "op",
    "broker": "ob",
    "broker-1-of-3": "k1",
    "broker-2-of-3": "k2",
    "partition-1-of-3": "kp",
    "cluster-restart": "kr",
}
PATH_CODES = {"kafka": "k", "rest": "r", "rest-kafka": "rk", "rest-kafka-enqueue": "rke"}


class RowCounter:
    """Counts rows per path prefix with one query per tick; tolerates Postgres being down."""

    def __init__(self, dsn: str, like: str) -> None:
        self.dsn = dsn
        self.like = like
        self.conn: asyncpg.Connection | None = None

    async def counts(self) -> dict[str, int] | None:
        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await asyncpg.connect(self.dsn, timeout=2)
            rows = await self.conn.fetch(
                "SELECT split_part(driver_id, '-', 1) AS p, count(*) AS n FROM drivers "
                "WHERE driver_id LIKE $1 GROUP BY 1",
                self.like,
                timeout=5,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            self.conn = None
            return None
        return {r["p"]: int(r["n"]) for r in rows}

    async def ids(self, prefix: str) -> set[str]:
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            rows = await conn.fetch("SELECT driver_id FROM drivers WHERE driver_id LIKE $1", prefix + "%")
        finally:
            await conn.close()
        return {r[0] for r in rows}

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


def _component(env: BenchEnvironment, scenario: str) -> Any:
    if scenario in KAFKA_SCENARIOS:
        assert isinstance(env.broker, PrivateCluster)
        return env.broker.scenario(scenario)
    return {"consumer": env.matching, "postgres": env.postgres, "broker": env.broker}[scenario]


def _client_errors(load: Any, rec: PathRecorder) -> dict[str, int]:
    if isinstance(load, HttpPathLoad):
        st = load.sender.stats
        return {
            "503_or_5xx_answers": st.unavailable,
            "connection_errors": st.connection_errors,
            "retries": st.retries,
            "given_up": st.given_up,
            "dropped": st.dropped,
            "rejected_4xx": st.rejected,
        }
    return {
        "delivery_failures": rec.count("failed"),
        "produce_refused": rec.count("refused"),
        "undelivered_at_close": load.undelivered_at_close,
    }


async def _scenario(
    env: BenchEnvironment,
    scenario: str,
    paths: tuple[str, ...],
    outage_s: float,
    rate: float,
    retry_s: float,
    pre_s: float,
    post_s: float,
    catchup_timeout_s: float,
) -> dict[str, Any]:
    tag = SCENARIO_TAGS[scenario]
    prefixes = {p: f"{tag}{PATH_CODES[p]}" for p in paths}
    makers = {p: PingMaker(prefixes[p] + "-", 1, unique=True) for p in paths}
    recs = {p: PathRecorder(window_start=0.0, keep_tags=True) for p in paths}
    loads: dict[str, Any] = {}
    for p in paths:
        if p == "kafka":
            loads[p] = KafkaPathLoad(env.broker.bootstrap, makers[p], recs[p], f"outage-{tag}")
        else:
            loads[p] = HttpPathLoad(
                env.ingest_url(p),
                makers[p],
                recs[p],
                connections=32,
                retry_s=retry_s,
                max_queue_wait_s=None,
                token_for=env.driver_tokens,
            )
    produced = dict.fromkeys(paths, 0)

    def emitter(p: str) -> Any:
        emit = loads[p].emit

        def run(k: int, due: float) -> None:
            produced[p] += 1
            emit(k, due)

        return run

    counter = RowCounter(env.postgres.dsn, tag + "%")
    timeline: dict[str, dict[str, list[Any]]] = {
        p: {"t": [], "accepted_per_s": [], "persisted": [], "backlog": []} for p in paths
    }
    last_persisted = dict.fromkeys(paths, 0)
    last_accepted = dict.fromkeys(paths, 0)
    t0 = time.monotonic()
    monitor_stop = asyncio.Event()

    def gone(p: str) -> int:
        rec = recs[p]
        return sum(rec.count(k) for k in ("failed", "refused", "given_up", "dropped", "rejected"))

    async def monitor() -> None:
        prev_t = time.monotonic()
        while not monitor_stop.is_set():
            await asyncio.sleep(1.0)
            counts = await counter.counts()
            now = time.monotonic()
            for p in paths:
                if counts is not None:
                    last_persisted[p] = counts.get(prefixes[p], 0)
                acc = recs[p].count("accepted")
                tl = timeline[p]
                tl["t"].append(round(now - t0, 2))
                tl["accepted_per_s"].append(round((acc - last_accepted[p]) / (now - prev_t), 1))
                tl["persisted"].append(last_persisted[p] if counts is not None else None)
                tl["backlog"].append(max(0, produced[p] - last_persisted[p] - gone(p)))
                last_accepted[p] = acc
            prev_t = now

    monitor_task = asyncio.create_task(monitor())
    stop_load = asyncio.Event()
    pacers = [asyncio.create_task(paced(rate, emitter(p), stop_load)) for p in paths]
    await asyncio.sleep(pre_s)
    component = _component(env, scenario)
    outage_start = time.monotonic() - t0
    log.warning("outage_begins", scenario=scenario)
    await asyncio.to_thread(component.stop)
    await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - t0 - outage_start)))
    await asyncio.to_thread(component.resume)
    outage_end = time.monotonic() - t0
    log.warning("outage_ends", scenario=scenario)
    await asyncio.sleep(post_s)
    stop_load.set()
    await asyncio.gather(*pacers)
    load_end = time.monotonic() - t0
    await asyncio.gather(*(loads[p].finish(retry_s + 5.0) for p in paths))
    # wait until every path's backlog is gone (or the timeout)
    deadline = time.monotonic() + catchup_timeout_s
    while time.monotonic() < deadline:
        counts = await counter.counts()
        if counts is not None and all(counts.get(prefixes[p], 0) + gone(p) >= produced[p] for p in paths):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.5)  # one more monitor tick after the end
    monitor_stop.set()
    await monitor_task
    results = []
    for p in paths:
        rec = recs[p]
        rows = await counter.ids(prefixes[p] + "-")
        accepted = rec.accepted_tags
        tl = timeline[p]
        pre = [b for t, b in zip(tl["t"], tl["backlog"], strict=True) if t <= outage_start]
        base = max(max(pre, default=0), int(rate * 0.5))
        catch_up = None
        peak = max(tl["backlog"], default=0)
        for t, b in zip(tl["t"], tl["backlog"], strict=True):
            if t >= outage_end and b <= base:
                catch_up = round(max(0.0, t - outage_end), 1)
                break
        if peak <= base:
            catch_up = 0.0
        results.append(
            {
                "path": p,
                "produced": produced[p],
                "accepted": len(accepted),
                "persisted": len(rows),
                "lost": produced[p] - len(rows),
                "lost_after_accept": len(accepted - rows),
                "persisted_without_accept": len(rows - accepted),
                "client_errors": sum(
                    v
                    for k, v in _client_errors(loads[p], rec).items()
                    if k not in ("retries", "given_up", "undelivered_at_close")
                ),
                "client_detail": _client_errors(loads[p], rec),
                "backlog_peak": peak,
                "catch_up_s": catch_up,
                "producer_stall_s": round(max(rec.latencies), 2) if len(rec.latencies) else None,
                "no_accept_s": round(rec.longest_no_accept_s, 2),
                "timeline": tl,
            }
        )
    await counter.close()
    return {
        "scenario": scenario,
        "fault": getattr(component, "info", None),
        "outage_start_s": round(outage_start, 2),
        "outage_end_s": round(outage_end, 2),
        "load_end_s": round(load_end, 2),
        "paths": results,
    }


async def _run(
    env: BenchEnvironment,
    scenarios: tuple[str, ...],
    paths: tuple[str, ...],
    outage_s: float,
    rate: float,
    retry_s: float,
) -> list[dict[str, Any]]:
    out = []
    for sc in scenarios:
        log.warning("outage_scenario", scenario=sc)
        out.append(
            await _scenario(
                env, sc, paths, outage_s, rate, retry_s, pre_s=5.0, post_s=10.0, catchup_timeout_s=max(60.0, outage_s)
            )
        )
        if isinstance(env.broker, PrivateCluster):
            settle_s = await asyncio.to_thread(env.broker.settle)
            out[-1]["in_sync_again_after_s"] = round(settle_s, 1)
        if sc != "postgres":
            await asyncio.to_thread(env.wait_matching_assigned)
    return out


def run_outage_bench(
    scenarios: tuple[str, ...] | None = None,
    paths: tuple[str, ...] = ALL_PATHS,
    outage_s: float = 30.0,
    rate: float = 300.0,
    retry_s: float = 10.0,
    broker: str = "tansu",
) -> dict[str, Any]:
    if broker not in BROKER_SCENARIOS:
        raise ValueError(f"unknown broker {broker!r}; choose from {sorted(BROKER_SCENARIOS)}")
    known = BROKER_SCENARIOS[broker]
    scenarios = scenarios or known
    if set(scenarios) - set(known):
        raise ValueError(
            f"unknown scenario(s) for --broker {broker}: {sorted(set(scenarios) - set(known))}; choose from {known}"
        )
    if set(paths) - set(ALL_PATHS):
        raise ValueError(f"unknown path(s) {sorted(set(paths) - set(ALL_PATHS))}; choose from {ALL_PATHS}")
    started = time.monotonic()
    machine = machine_info()
    with bench_environment(paths, broker_kind=broker) as env:
        broker_info: dict[str, Any] = (
            env.broker.describe() if isinstance(env.broker, PrivateCluster) else {"kind": "tansu"}
        )
        results = asyncio.run(_run(env, scenarios, paths, outage_s, rate, retry_s))
        machine["postgres_probe"] = env.postgres_probe
        if isinstance(env.broker, PrivateCluster):
            broker_info["rss_mb_per_node_at_end"] = env.broker.cluster.rss_mb()
    broker_info["label"] = BROKER_LABELS[broker]
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()[:2]]
    return {
        "bench": "outage",
        "machine": machine,
        "broker": broker_info,
        "config": {
            "broker": broker,
            "outage_s": outage_s,
            "rate_per_path_per_s": rate,
            "paths": list(paths),
            "scenarios": list(scenarios),
            "rest_client": f"32 keep-alive connections, retries 503/connection errors with backoff "
            f"(Retry-After honoured) until a ping is {retry_s:g} s old, then gives up",
            "kafka_client": "EventProducer: acks=all, idempotent; librdkafka retries a record for up to "
            "message.timeout.ms (300 s default)",
            "rest_kafka_edge": "ack=broker: 202 after the broker's ack, 503 after 5 s without one; "
            "ack=enqueue: 202 once queued, record expires after 5 s",
            "stops": {
                "consumer": "SIGTERM to matching (graceful), started again after the outage",
                "postgres": "pg_ctl stop -m fast on the private embedded Postgres, pg_ctl start after",
                "broker": "SIGTERM to tansu (memory storage: it returns empty), restarted on the same port, "
                "topics re-created",
                **KAFKA_STOPS,
            },
            "pre_outage_s": 5.0,
            "post_outage_load_s": 10.0,
        },
        "scenarios": results,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
