"""``ridehail bench outage``: steady load on every arm at once (each ingestion path at each retry
budget, and the kafka path with acks=0, 1 and all), then one component stops for ``outage_s`` and
comes back. Every headline point is repeated (``repeats``, in an interleaved order) and reported
as median + IQR.

Brokers: ``kafka`` (the main result: a local 3-node Apache Kafka cluster, RF 3,
``min.insync.replicas=2``) runs ``postgres``, ``consumer`` (matching) and ``broker-1-of-3``
(kill -9 of the node leading partition 0, about a third of the partitions) by default;
``tansu`` (embedded, in memory, a single node: a labelled secondary row) runs ``broker``.
What is measured and how: :mod:`.outage_run`, :mod:`.outage_measure`, :mod:`.outage_arms`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from ridehail.bench.experiments.cluster_infra import KAFKA_SCENARIOS, KAFKA_STOPS, PrivateCluster
from ridehail.bench.experiments.environment import ALL_PATHS, BenchEnvironment, bench_environment, machine_info
from ridehail.bench.experiments.outage_arms import Arm, build_arms
from ridehail.bench.experiments.outage_run import RunConfig, run_once
from ridehail.bench.experiments.outage_summary import summarise
from ridehail.bench.experiments.stats import MIN_REPEATS, interleaved_schedule

BROKER_SCENARIOS = {
    "kafka": ("postgres", "consumer", *KAFKA_SCENARIOS),
    "tansu": ("consumer", "postgres", "broker"),
}
DEFAULT_SCENARIOS = {"kafka": ("postgres", "consumer", "broker-1-of-3"), "tansu": ("broker",)}
BROKER_LABELS = {
    "tansu": "embedded tansu 0.6: in memory, a single node (a restart forgets every record and offset); secondary row",
    "kafka": "local Apache Kafka cluster: 3 nodes, replication factor 3, min.insync.replicas=2, durable; main result",
}
STOPS = {
    "consumer": "SIGTERM to matching (the consumer, graceful), started again after the outage",
    "postgres": "pg_ctl stop -m fast on the private embedded Postgres, pg_ctl start after",
    "broker": "SIGTERM to tansu (memory storage: it returns empty), restarted on the same port, topics re-created",
    **KAFKA_STOPS,
}
EDGE_TIMEOUT_S = 2.0  # RIDEHAIL_INGEST_TIMEOUT_S of the edges: 503 after this long without Postgres / the broker


def _progress(msg: str) -> None:
    print(f"[bench outage {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def _runs(
    env: BenchEnvironment, broker: str, schedule: list[tuple[int, str]], arms: list[Arm], cfg: RunConfig, done: int
) -> list[dict[str, Any]]:
    out = []
    for i, (repeat, scenario) in enumerate(schedule):
        started = time.monotonic()
        run = await run_once(env, scenario, repeat, arms, cfg)
        run["broker"] = broker
        if isinstance(env.broker, PrivateCluster):
            run["in_sync_again_after_s"] = round(await asyncio.to_thread(env.broker.settle), 1)
        if scenario != "postgres":
            await asyncio.to_thread(env.wait_matching_assigned)
        run["elapsed_s"] = round(time.monotonic() - started, 1)
        out.append(run)
        lost = ", ".join(f"{p['arm']}: {p['lost']}" for p in run["paths"] if p["lost"])
        _progress(
            f"run {done + i + 1}: {broker} {scenario} repeat {repeat + 1} in {run['elapsed_s']} s; "
            f"lost {lost or 'none'}"
        )
    return out


def _parse_brokers(brokers: tuple[str, ...], scenarios: tuple[str, ...] | None) -> dict[str, tuple[str, ...]]:
    plan: dict[str, tuple[str, ...]] = {}
    for b in brokers:
        if b not in BROKER_SCENARIOS:
            raise ValueError(f"unknown broker {b!r}; choose from {sorted(BROKER_SCENARIOS)}")
        chosen = DEFAULT_SCENARIOS[b] if not scenarios else tuple(s for s in scenarios if s in BROKER_SCENARIOS[b])
        if chosen:
            plan[b] = chosen
    if scenarios:
        unknown = set(scenarios) - {s for b in brokers for s in BROKER_SCENARIOS[b]}
        if unknown:
            raise ValueError(
                f"unknown scenario(s) for broker(s) {', '.join(brokers)}: {sorted(unknown)}; "
                f"choose from {', '.join(f'{b}: {BROKER_SCENARIOS[b]}' for b in brokers)}"
            )
    if not plan:
        raise ValueError("nothing to run: no scenario belongs to the chosen broker(s)")
    return plan


def run_outage_bench(
    scenarios: tuple[str, ...] | None = None,
    paths: tuple[str, ...] = ALL_PATHS,
    outage_s: float = 12.0,
    rate: float = 40.0,
    budgets: tuple[float, ...] = (3.0, 8.0, 30.0),
    brokers: tuple[str, ...] = ("kafka", "tansu"),
    repeats: int = MIN_REPEATS,
    acks_levels: tuple[str, ...] = ("0", "1", "all"),
    acks_budget_s: float | None = None,
    pre_s: float = 3.0,
    post_s: float = 8.0,
    freshness_threshold_s: float = 3.0,
) -> dict[str, Any]:
    if set(paths) - set(ALL_PATHS):
        raise ValueError(f"unknown path(s) {sorted(set(paths) - set(ALL_PATHS))}; choose from {ALL_PATHS}")
    if outage_s <= 0 or rate <= 0 or repeats < 1:
        raise ValueError("outage seconds and rate must be > 0 and repeats >= 1")
    plan = _parse_brokers(brokers, scenarios)
    # acks=0/1 at the longest budget: what they lose is then not a time-out but the acks level itself
    acks_budget = acks_budget_s if acks_budget_s is not None else max(budgets)
    arms = build_arms(paths, budgets, acks_levels, acks_budget)
    drivers = max(1, round(rate))  # each logical driver pings once a second
    cfg = RunConfig(
        outage_s=outage_s,
        rate=rate,
        drivers=drivers,
        pre_s=pre_s,
        post_s=post_s,
        freshness_threshold_s=freshness_threshold_s,
        rest_connections=16,
        request_timeout_s=EDGE_TIMEOUT_S + 3.0,
    )
    started = time.monotonic()
    machine = machine_info()
    broker_info: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    for broker, chosen in plan.items():
        schedule = interleaved_schedule(chosen, repeats)
        _progress(f"{broker}: starting Postgres, broker, matching, edges; {len(schedule)} runs, {len(arms)} arms")
        with bench_environment(
            paths, broker_kind=broker, edge_env={"RIDEHAIL_INGEST_TIMEOUT_S": f"{EDGE_TIMEOUT_S:g}"}
        ) as env:
            cluster = isinstance(env.broker, PrivateCluster)
            info: dict[str, Any] = env.broker.describe() if isinstance(env.broker, PrivateCluster) else {}
            info.setdefault("kind", "kafka" if cluster else "tansu")
            runs.extend(asyncio.run(_runs(env, broker, schedule, arms, cfg, len(runs))))
            machine.setdefault("postgres_probe", {})[broker] = env.postgres_probe
            if isinstance(env.broker, PrivateCluster):
                info["rss_mb_per_node_at_end"] = env.broker.cluster.rss_mb()
        info["label"] = BROKER_LABELS[broker]
        broker_info[broker] = info
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()[:2]]
    return {
        "bench": "outage",
        "machine": machine,
        "broker": broker_info,
        "config": {
            "brokers": list(plan),
            "scenarios": {b: list(s) for b, s in plan.items()},
            "repeats": repeats,
            "outage_s": outage_s,
            "pre_outage_s": pre_s,
            "post_outage_load_s": post_s,
            "rate_per_arm_per_s": rate,
            "logical_drivers_per_arm": drivers,
            "paths": list(paths),
            "budgets_s": list(budgets),
            "acks_levels": list(acks_levels),
            "acks_arms_budget_s": acks_budget,
            "arms": [a.name for a in arms],
            "freshness_threshold_s": freshness_threshold_s,
            "edge_timeout_s": EDGE_TIMEOUT_S,
            "rest_client": f"{cfg.rest_connections} keep-alive connections per arm; per-request timeout "
            f"{cfg.request_timeout_s:g} s (longer than the edge's {EDGE_TIMEOUT_S:g} s, so the edge's 503 is seen); "
            "retries 503/429/connection errors with backoff (Retry-After honoured); a ping is given up once it is "
            "budget old, time queued in the client included (or when the next retry would land past the budget)",
            "kafka_client": "EventProducer per arm: acks=all idempotent, or acks=1 / acks=0 (not idempotent); "
            "message.timeout.ms = budget (a client recreated after a fatal error produces what it held again, "
            "with a fresh timeout: counted as requeued_after_client_recreation)",
            "rest_kafka_edge": f"ack=broker: 202 after the broker's ack, 503 after {EDGE_TIMEOUT_S:g} s without one; "
            f"ack=enqueue: 202 once queued, record expires after {EDGE_TIMEOUT_S:g} s",
            "stops": {s: STOPS[s] for b in plan.values() for s in b},
            "broker_description": {b: BROKER_LABELS[b] for b in plan},
        },
        "runs": runs,
        "summary": summarise(runs),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
