"""One run of ``ridehail bench outage``: every arm under steady load at once, one component stops
for ``outage_s`` and comes back, then each arm's loss, acknowledged-but-lost, answers, stall,
backlog, catch-up and freshness, measured from the rows in Postgres (see :mod:`.outage_measure`)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from ridehail.bench.experiments.cluster_infra import PrivateCluster
from ridehail.bench.experiments.environment import BenchEnvironment
from ridehail.bench.experiments.load import PathRecorder, PingMaker, paced
from ridehail.bench.experiments.outage_arms import GONE, Arm, ArmLoad, KafkaArmLoad, RestArmLoad
from ridehail.bench.experiments.outage_measure import StoredPing, accounting, arm_settled, catch_up_s, freshness
from ridehail.bench.experiments.outage_trace import keys_on_topic
from ridehail.common.logging import get_logger
from ridehail.domain.topics import DRIVER_LOCATION

log = get_logger(__name__)

# scenario -> the letters of its row tag (with the repeat number after it)
SCENARIO_CODES = {
    "consumer": "c",
    "postgres": "p",
    "broker": "b",
    "broker-1-of-3": "ka",
    "broker-2-of-3": "kb",
    "partition-1-of-3": "kp",
    "cluster-restart": "kr",
}

# faults after which the other nodes can elect new leaders (two of three down: no quorum, no move)
LEADERS_MUST_MOVE = ("broker-1-of-3", "partition-1-of-3")


@dataclass(frozen=True)
class RunConfig:
    outage_s: float
    rate: float  # pings per second per arm
    drivers: int  # logical drivers per arm (ping k is driver k % drivers)
    pre_s: float
    post_s: float
    freshness_threshold_s: float
    rest_connections: int
    request_timeout_s: float
    quiet_s: float = 8.0  # after the clients finished: no new row this long = settled (a ping is missing)
    settle_timeout_s: float = 60.0


class ArmRows:
    """The rows of every arm of one run: counts per tick and stored ids while settling (both tolerate
    Postgres down), then all rows."""

    def __init__(self, dsn: str, tag: str) -> None:
        self.dsn = dsn
        self.tag = tag
        self.conn: asyncpg.Connection | None = None
        self._busy = asyncio.Lock()  # the monitor and the settle loop share the connection

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record] | None:
        """``query``'s rows, or None while Postgres is away (the next call connects again)."""
        async with self._busy:
            try:
                if self.conn is None or self.conn.is_closed():
                    self.conn = await asyncpg.connect(self.dsn, timeout=2)
                rows: list[asyncpg.Record] = await self.conn.fetch(query, *args, timeout=5)
                return rows
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if self.conn is not None:
                    self.conn.terminate()
                self.conn = None
                return None

    async def counts(self) -> dict[str, int] | None:
        rows = await self._fetch(
            "SELECT split_part(driver_id, '-', 1) AS p, count(*) AS n FROM drivers WHERE driver_id LIKE $1 GROUP BY 1",
            self.tag + "%",
        )
        return None if rows is None else {r["p"]: int(r["n"]) for r in rows}

    async def ids(self, prefixes: list[str]) -> dict[str, set[int]] | None:
        """The ping indexes stored so far under each of ``prefixes`` (None while Postgres is away)."""
        rows = await self._fetch("SELECT driver_id FROM drivers WHERE driver_id LIKE $1", self.tag + "%")
        if rows is None:
            return None
        out: dict[str, set[int]] = {p: set() for p in prefixes}
        for (driver_id,) in rows:
            prefix, _, k = driver_id.rpartition("-")
            if prefix + "-" in out:
                out[prefix + "-"].add(int(k))
        return out

    async def stored(self, prefix: str) -> list[StoredPing]:
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT driver_id, last_ts, extract(epoch from updated_at) * 1000 AS at FROM drivers "
                "WHERE driver_id LIKE $1",
                prefix + "%",
            )
        finally:
            await conn.close()
        return [StoredPing(int(r[0][len(prefix) :]), float(r[1]), float(r[2])) for r in rows]

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


def _component(env: BenchEnvironment, scenario: str) -> Any:
    if isinstance(env.broker, PrivateCluster) and scenario not in ("consumer", "postgres"):
        return env.broker.scenario(scenario)
    return {"consumer": env.matching, "postgres": env.postgres, "broker": env.broker}[scenario]


def _leaders(env: BenchEnvironment) -> dict[int, int] | None:
    if not isinstance(env.broker, PrivateCluster):
        return None
    try:
        return {p.partition: p.leader for p in env.broker.cluster.partitions([DRIVER_LOCATION.name], timeout_s=3)}
    except Exception as exc:  # the record says so; the run goes on
        log.warning("leaders_unreadable", error=repr(exc)[:200])
        return None


def _leader_moves(before: dict[int, int] | None, during: dict[int, int] | None, victims: list[int]) -> dict[str, Any]:
    if before is None or during is None:
        return {"leaders_before": before, "leaders_during": during}
    led = sorted(p for p, n in before.items() if n in victims)
    return {
        "leaders_before": {str(p): n for p, n in sorted(before.items())},
        "leaders_during": {str(p): n for p, n in sorted(during.items())},
        "partitions_led_by_victims": led,
        "partitions_whose_leader_moved": sorted(p for p in led if during.get(p, -1) not in (-1, before[p])),
    }


def _presign(env: BenchEnvironment, makers: list[PingMaker], pings: int) -> dict[str, str]:
    """Every REST ping's driver token, signed before the load starts: each ping has its own driver
    id, and signing ~0.1-1 ms per ping inside the measured window would starve the client's loop."""
    return {
        m.driver_id(k): env.driver_tokens.signer.token(m.driver_id(k), role="driver")
        for m in makers
        for k in range(pings)
    }


def _make_load(
    env: BenchEnvironment,
    arm: Arm,
    maker: PingMaker,
    rec: PathRecorder,
    cfg: RunConfig,
    tag: str,
    tokens: dict[str, str],
) -> Any:
    if arm.path == "kafka":
        return KafkaArmLoad(env.broker.bootstrap, arm, maker, rec, f"outage-{tag}{arm.code}")

    def token_for(driver_id: str) -> str:
        return tokens.get(driver_id) or env.driver_tokens(driver_id)

    return RestArmLoad(
        env.ingest_url(arm.path), arm, maker, rec, token_for, cfg.rest_connections, cfg.request_timeout_s
    )


async def _traces(env: BenchEnvironment, missing: dict[Arm, set[str]]) -> dict[Arm, dict[str, Any]]:
    """Where each arm's acknowledged but unstored pings are (driver ids): how many are on the
    location topic (the broker kept them, so the consumer side did not store them), on its
    dead-letter topic (refused, with a reason), and the first few ids. One read of each topic
    for every arm; only the kafka path's pings are keyed by driver id on the topic."""
    out: dict[Arm, dict[str, Any]] = {a: {"ids": sorted(ids)[:20]} for a, ids in missing.items()}
    keyed = {a: ids for a, ids in missing.items() if a.path == "kafka"}
    if keyed:
        wanted = set().union(*keyed.values())
        for field_name, topic in (("on_topic", DRIVER_LOCATION.name), ("dead_lettered", DRIVER_LOCATION.dlq)):
            found = await asyncio.to_thread(keys_on_topic, env.broker.bootstrap, topic, wanted)
            for a, ids in keyed.items():
                out[a][field_name] = None if found is None else len(ids & found)
    return out


async def run_once(
    env: BenchEnvironment, scenario: str, repeat: int, arms: list[Arm], cfg: RunConfig
) -> dict[str, Any]:
    tag = f"{SCENARIO_CODES[scenario]}{repeat:02d}"
    rows = ArmRows(env.postgres.dsn, tag)
    try:
        return await _run(env, scenario, repeat, arms, cfg, tag, rows)
    finally:
        await rows.close()


async def _run(
    env: BenchEnvironment, scenario: str, repeat: int, arms: list[Arm], cfg: RunConfig, tag: str, rows: ArmRows
) -> dict[str, Any]:
    prefixes = {a: f"{tag}{a.code}-" for a in arms}
    makers = {a: PingMaker(prefixes[a], cfg.drivers, unique=True) for a in arms}
    recs = {a: PathRecorder(window_start=0.0, keep_tags=True) for a in arms}
    expected = int(cfg.rate * (cfg.pre_s + cfg.outage_s + cfg.post_s + 30.0))  # + a restart's time (matching)
    rest_makers = [makers[a] for a in arms if a.path != "kafka"]
    tokens = await asyncio.to_thread(_presign, env, rest_makers, expected)
    loads: dict[Arm, ArmLoad] = {a: _make_load(env, a, makers[a], recs[a], cfg, tag, tokens) for a in arms}
    produced = dict.fromkeys(arms, 0)

    emits = [(a, loads[a].emit) for a in arms]

    def emit_all(k: int, due: float) -> None:  # one pacer for every arm: ping k is due on all at once
        for a, emit in emits:
            produced[a] += 1
            emit(k, due)

    def gone(a: Arm) -> int:
        return sum(recs[a].count(k) for k in GONE)

    cpu0 = os.times()
    timeline: dict[Arm, dict[str, list[Any]]] = {a: {"t": [], "persisted": [], "backlog": []} for a in arms}
    persisted = dict.fromkeys(arms, 0)
    t0 = time.monotonic()
    monitor_stop = asyncio.Event()

    async def monitor() -> None:
        while not monitor_stop.is_set():
            await asyncio.sleep(1.0)
            counts = await rows.counts()
            now = round(time.monotonic() - t0, 2)
            for a in arms:
                if counts is not None:
                    persisted[a] = counts.get(prefixes[a][:-1], 0)
                tl = timeline[a]
                tl["t"].append(now)
                tl["persisted"].append(persisted[a] if counts is not None else None)
                tl["backlog"].append(max(0, produced[a] - persisted[a] - gone(a)))

    monitor_task = asyncio.create_task(monitor())
    stop_load = asyncio.Event()
    pacers = [asyncio.create_task(paced(cfg.rate, emit_all, stop_load))]
    await asyncio.sleep(cfg.pre_s)
    component = _component(env, scenario)
    before = await asyncio.to_thread(_leaders, env) if scenario not in ("consumer", "postgres") else None
    outage_start = time.monotonic() - t0
    start_ms = time.time() * 1000
    await asyncio.to_thread(component.stop)
    during, moved_after = None, None
    victims = list((getattr(component, "info", None) or {}).get("nodes", []))
    if before is not None and victims and scenario in LEADERS_MUST_MOVE:
        # A killed node's partitions get new leaders once the controller fenced it (broker session
        # time-out, plus a controller election when the controller died too): the node stays down
        # until that happened (+2 s), however long it takes, up to outage_s + 40 s.
        led = [p for p, n in before.items() if n in victims]
        while time.monotonic() - t0 - outage_start < cfg.outage_s + 40.0:
            during = await asyncio.to_thread(_leaders, env)
            if during is not None and all(during.get(p, -1) not in (-1, *victims) for p in led):
                moved_after = time.monotonic() - t0 - outage_start
                break
            await asyncio.sleep(0.5)
        if moved_after is not None:
            await asyncio.sleep(max(0.0, moved_after + 2.0 - (time.monotonic() - t0 - outage_start)))
    await asyncio.sleep(max(0.0, cfg.outage_s - (time.monotonic() - t0 - outage_start)))
    outage_end = time.monotonic() - t0
    return_ms = time.time() * 1000  # the component is started again now; for a node: its JVM starts
    await asyncio.to_thread(getattr(component, "start_again", component.resume))
    back_after_s = time.monotonic() - t0 - outage_end
    await asyncio.sleep(cfg.post_s)
    stop_load.set()
    await asyncio.gather(*pacers)
    load_end = time.monotonic() - t0
    load_end_ms = time.time() * 1000
    cpu1 = os.times()
    client_cores = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / max(1e-9, cpu1.elapsed - cpu0.elapsed)
    await asyncio.gather(*(loads[a].finish(a.budget_s + 5.0) for a in arms))
    # settled: every acknowledged ping in Postgres and every other one answered, or the rows
    # unchanged for quiet_s (an acknowledged ping that never comes)
    deadline = time.monotonic() + cfg.settle_timeout_s
    last_total, last_change = -1, time.monotonic()
    settled_by = "timeout"
    while time.monotonic() < deadline:
        ids = await rows.ids(list(prefixes.values()))
        if ids is not None:
            if all(arm_settled(produced[a], recs[a].accepted_tags, gone(a), ids[prefixes[a]]) for a in arms):
                settled_by = "all_answered"
                break
            total = sum(map(len, ids.values()))
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            elif time.monotonic() - last_change >= cfg.quiet_s:
                settled_by = "quiet"
                break
        await asyncio.sleep(0.5)
    monitor_stop.set()
    await monitor_task
    results = []
    missing: dict[Arm, set[str]] = {}
    for a in arms:
        stored = await rows.stored(prefixes[a])
        rec = recs[a]
        stored_ids = {p.k for p in stored}
        acct = accounting(produced[a], set(rec.accepted_tags), stored_ids)
        if acct["acknowledged_but_lost"]:
            missing[a] = {makers[a].driver_id(k) for k in rec.accepted_tags - stored_ids}
        results.append(
            {
                "path": a.path,
                "arm": a.name,
                "acks": a.acks,
                "budget_s": a.budget_s,
                **acct,
                "acknowledged_but_lost_trace": None,  # filled in below for an arm that lost one
                "lost_pct": round(100.0 * acct["lost"] / acct["produced"], 2) if acct["produced"] else None,
                "client_outcomes": dict(sorted(rec.outcomes.items())),
                "client": loads[a].client_detail(),
                "producer_stall_s": round(max(rec.latencies), 2) if len(rec.latencies) else None,
                "no_accept_s": round(rec.longest_no_accept_s, 2),
                "backlog_peak": max(timeline[a]["backlog"], default=0),
                "catch_up_s": catch_up_s(stored, return_ms),
                "freshness": freshness(
                    stored, cfg.drivers, return_ms, load_end_ms, cfg.freshness_threshold_s, start_ms=start_ms
                ),
                "timeline": timeline[a],
            }
        )
    if missing:
        traces = await _traces(env, missing)
        for a, result in zip(arms, results, strict=True):
            result["acknowledged_but_lost_trace"] = traces.get(a)
    info = dict(getattr(component, "info", None) or {})
    if before is not None:
        info.update(_leader_moves(before, during, victims))
        info["leaders_moved_after_s"] = None if moved_after is None else round(moved_after, 2)
    return {
        "scenario": scenario,
        "repeat": repeat,
        "tag": tag,
        "fault": info or None,
        "outage_start_s": round(outage_start, 2),
        "outage_end_s": round(outage_end, 2),  # when the component was started again
        "resume_returned_after_s": round(back_after_s, 2),  # pg_ctl start / matching ready / node started
        "load_end_s": round(load_end, 2),
        "settled_s": round(time.monotonic() - t0, 2),
        # all_answered: every acknowledged ping stored, every other answered; quiet: no new row
        # for quiet_s (an acknowledged ping never came); timeout: settle_timeout_s
        "settled_by": settled_by,
        # the bench process (every client; its asyncio loop is one core at most) while the load ran
        "client_cpu_cores": round(client_cores, 2),
        "load_avg_after": [round(x, 2) for x in os.getloadavg()[:2]],
        "paths": results,
    }
