"""The set of processes both benches run: private Postgres, private broker, matching, and one
ingest edge per REST path, all as real subprocesses."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ridehail.bench.experiments.cluster_infra import PrivateCluster
from ridehail.bench.experiments.infra import (
    CpuMeter,
    PrivateBroker,
    PrivatePostgres,
    ServiceProcess,
    http_get,
    remove_tree,
    temp_root,
)
from ridehail.common.ports import free_port
from ridehail.harness.tokens import DriverTokens, LocalSigner, serving_jwks

# path name -> (ingest mode, ack); the kafka path has no edge
REST_PATHS: dict[str, tuple[str, str]] = {
    "rest": ("rest", "broker"),
    "rest-kafka": ("rest-kafka", "broker"),
    "rest-kafka-enqueue": ("rest-kafka", "enqueue"),
}
ALL_PATHS = ("kafka", "rest", "rest-kafka", "rest-kafka-enqueue")
MATCHING_CONSUMER = "matching-locations"


@dataclass
class BenchEnvironment:
    root: Path
    postgres: PrivatePostgres
    broker: PrivateBroker | PrivateCluster
    matching: ServiceProcess
    edges: dict[str, ServiceProcess] = field(default_factory=dict)
    postgres_probe: dict[str, float] = field(default_factory=dict)
    # the edges verify driver tokens offline against this signer's JWKS (served by the bench)
    driver_tokens: DriverTokens = field(default_factory=lambda: DriverTokens(LocalSigner()))

    def components(self) -> dict[str, Any]:
        out: dict[str, Any] = {"postgres": self.postgres, "broker": self.broker, "matching": self.matching}
        out.update({f"ingest[{p}]": e for p, e in self.edges.items()})
        return out

    def ingest_url(self, path: str) -> str:
        return self.edges[path].base_url + "/ingest/ping"

    def consumed(self) -> float | None:
        return self.matching.metric("ridehail_consumer_messages_total", f'consumer="{MATCHING_CONSUMER}"')

    def dead_lettered(self) -> float:
        return self.matching.metric("ridehail_consumer_dead_letters_total", f'consumer="{MATCHING_CONSUMER}"') or 0.0

    def matching_ready(self) -> bool:
        status, body = http_get(self.matching.base_url + "/stats", 2.0)
        if status != 200:
            return False
        return int(json.loads(body).get("partitions", {}).get("locations", 0)) > 0

    def wait_matching_assigned(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.matching_ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"matching got no partitions within {timeout_s}s; see {self.matching.log_file}")


class CpuSet:
    """One CpuMeter per component; ``snapshot()`` -> CPU seconds so far, by component."""

    def __init__(self, env: BenchEnvironment) -> None:
        self.env = env
        self.meters = {name: CpuMeter() for name in env.components()}

    def snapshot(self) -> dict[str, float]:
        return {name: self.meters[name].sample(comp.pids()) for name, comp in self.env.components().items()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(load1, 2), round(load5, 2)],
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def postgres_probe(dsn: str, n: int = 300) -> dict[str, float]:
    """What one commit costs on this machine right now: the REST path pays it per ping, the
    event path per batch (sequential single-row upserts vs one 1000-row upsert)."""
    import asyncio

    import asyncpg

    from ridehail.stores.drivers import UPSERT_ONE_SQL as UPSERT_ONE

    async def probe() -> dict[str, float]:
        conn = await asyncpg.connect(dsn)
        try:
            t0 = time.perf_counter()
            for i in range(n):
                await conn.fetchrow(UPSERT_ONE, f"probe-{i}", 57.7, 11.97, 0.0, 0.0, "available", 1, 0)
            single = (time.perf_counter() - t0) / n
            ids = [f"probe-b{i}" for i in range(1000)]
            t0 = time.perf_counter()
            for rnd in range(10):
                await conn.execute(
                    "INSERT INTO drivers (driver_id, lat, lon, status, last_seq, last_ts) "
                    "SELECT unnest($1::varchar[]), 57.7, 11.97, 'available', $2, 0 "
                    "ON CONFLICT (driver_id) DO UPDATE SET last_seq = EXCLUDED.last_seq "
                    "WHERE drivers.last_seq < EXCLUDED.last_seq",
                    ids,
                    rnd + 1,
                )
            batch = (time.perf_counter() - t0) / 10
            await conn.execute("DELETE FROM drivers WHERE driver_id LIKE 'probe-%'")
        finally:
            await conn.close()
        return {
            "single_row_commit_ms": round(single * 1000, 3),
            "single_row_commits_per_s_one_connection": round(1 / single, 1),
            "batch_1000_rows_commit_ms": round(batch * 1000, 2),
            "rows_per_s_in_1000_row_batches": round(1000 / batch, 1),
        }

    return asyncio.run(probe())


@contextlib.contextmanager
def bench_environment(
    paths: tuple[str, ...],
    prefix: str = "ridehail-exp-",
    rest_db_pool: int = 16,
    broker_kind: str = "tansu",
    extra_edges: dict[str, dict[str, str]] | None = None,
    edge_env: dict[str, str] | None = None,
) -> Iterator[BenchEnvironment]:
    """``paths``: the REST_PATHS edges to start; ``extra_edges``: more edges, name -> their
    ``RIDEHAIL_INGEST_*`` settings (e.g. the ingest study's arms); ``edge_env``: extra environment
    of every edge (e.g. ``RIDEHAIL_INGEST_TIMEOUT_S``)."""
    root = temp_root(prefix)
    postgres = PrivatePostgres(root)
    broker: PrivateBroker | PrivateCluster = PrivateCluster(root) if broker_kind == "kafka" else PrivateBroker(root)
    started: list[Any] = []
    signer = LocalSigner()
    jwks = contextlib.ExitStack()
    try:
        auth_url = jwks.enter_context(serving_jwks(signer))
        postgres.start()
        started.append(postgres)
        broker.start()
        started.append(broker)
        common = {"RIDEHAIL_DATABASE_URL": postgres.url, "RIDEHAIL_KAFKA_BOOTSTRAP": broker.bootstrap}
        port = free_port()
        matching = ServiceProcess(
            "matching",
            "matching",
            {
                **common,
                "RIDEHAIL_MATCHING_PORT": str(port),
                "RIDEHAIL_MATCHING_GROUP_ID": f"exp-{uuid.uuid4().hex[:8]}",
                "RIDEHAIL_MATCHING_REFRESH_S": "600",
                "RIDEHAIL_MATCHING_ETA_MODEL": "straight_line",
            },
            port,
            root,
        )
        env = BenchEnvironment(root, postgres, broker, matching, driver_tokens=DriverTokens(signer))
        env.postgres_probe = postgres_probe(postgres.dsn)
        matching.start()
        started.append(matching)
        edges = {p: {"RIDEHAIL_INGEST_MODE": m, "RIDEHAIL_INGEST_ACK": a} for p, (m, a) in REST_PATHS.items()}
        wanted = {p: edges[p] for p in paths if p in REST_PATHS} | (extra_edges or {})
        for path, own_env in wanted.items():
            port = free_port()
            edge = ServiceProcess(
                f"ingest-{path}",
                "ingest",
                {
                    **common,
                    "RIDEHAIL_INGEST_PORT": str(port),
                    "RIDEHAIL_INGEST_DB_POOL_SIZE": str(rest_db_pool),
                    "RIDEHAIL_AUTH_BASE_URL": auth_url,  # the JWKS the edge verifies driver tokens with
                    **(edge_env or {}),
                    **own_env,
                },
                port,
                root,
            )
            started.append(edge)  # closed on the way out even if it never became healthy
            env.edges[path] = edge
        with ThreadPoolExecutor(max_workers=max(1, len(env.edges))) as pool:  # edges start side by side
            for future in [pool.submit(edge.start) for edge in env.edges.values()]:
                future.result()
        env.wait_matching_assigned()
        yield env
    finally:
        for comp in reversed(started):
            with contextlib.suppress(Exception):
                comp.close()
        jwks.close()
        remove_tree(root)
