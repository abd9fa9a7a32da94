"""``ridehail bench stack``: the whole stack as a user runs it, measured as a user feels it.

It starts the real ``ridehail up --drivers N --riders-per-min 0`` on free ports and a throw-away
database, then, from this process:

* requests ``rides_per_s`` rides per second through the REST API (``POST /api/rides`` with a rider
  token signed by the stack's own auth key; one rider per ride, so no per-rider limit is hit);
* opens the map page once, as a user does (the gateway builds it on the first request);
* watches the live feed with one anonymous websocket client subscribed to the whole city and
  times sampled car entries from the ping's creation to their arrival here (``gps_to_client``),
  and counts the frames that brought each simulator step's pings (``gps_steps``);
* samples every process of the stack once a second (RSS and CPU seconds by process, named by the
  service it runs, or its services joined by ``+`` when they share one; Postgres is not counted)
  and every process's ``ridehail_consumer_lag``.

``request_to_offer`` runs from the moment this process sent the POST to the first offer matching
made for that ride (``ride.offered`` in the ride history, else ``rides.offered_at``, both on the
same clock as this process). A ride with no offer within ``offer_grace_s`` after the window counts
as slower than every answered one (no censoring). Only rides requested inside the measurement
window count; the warm-up's do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ridehail.bench.experiments.load import paced
from ridehail.bench.experiments.stats import uncensored_percentiles_ms
from ridehail.bench.gateway import ClientStats, city_bbox, step_delivery, watch_feed
from ridehail.bench.machine import CpuTimes, cpu_shares, speed_probe_ms
from ridehail.bench.stack_probe import Sample, StackProbe, batch_counters, batch_window, consumer_lags, postgres_cpu_s

TARGETS = {
    "rss_mb_total": "<= 600 at 1,000 drivers",
    "request_to_offer_p99_ms": "<= 100 at 3,000 drivers and 10 requests/s",
    "gps_to_client_p99_ms": "<= 150 at 3,000 drivers and 10 requests/s",
    "cpu_cores_total": "<= 1.2 at 3,000 drivers and 10 requests/s",
}
METRIC_SERVICES = ("auth", "matching", "pricing", "gateway", "simulator")


@dataclass
class RideLog:
    sent_ms: dict[str, float] = field(default_factory=dict)  # ride_id -> wall ms when the POST was sent
    post_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # requests of the window that got no 202 (counted as never offered)
    measuring: bool = False
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)


LAG_TICK_S = 0.01


async def _loop_lag(stop: asyncio.Event, log: RideLog, lags_ms: list[float]) -> None:
    """How late this process's event loop runs a 10 ms timer while measuring: a frame that reaches a
    busy client waits here too, and counts as late."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(LAG_TICK_S)
        if log.measuring:
            lags_ms.append((time.perf_counter() - started - LAG_TICK_S) * 1000)


async def _tokens(database_url: str, n: int) -> list[str]:
    """``n`` rider access tokens signed with the stack's active key (what ``/auth/token`` issues)."""
    from ridehail.auth.keys import load_key_set
    from ridehail.auth.tokens import TokenIssuer
    from ridehail.common.db import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        key_set = await load_key_set(make_sessionmaker(engine), 10**9)  # 10**9 s: keeps every key
    finally:
        await engine.dispose()
    issuer = TokenIssuer(key_set, 4 * 3600)
    return [issuer.access(str(uuid.uuid4()), "rider").token for _ in range(n)]


async def _request_ride(
    client: httpx.AsyncClient, url: str, token: str, trip: tuple[tuple[float, float], ...], log: RideLog
) -> None:
    (plat, plon), (dlat, dlon) = trip
    body = {"pickup": {"lat": plat, "lon": plon}, "dropoff": {"lat": dlat, "lon": dlon}}
    measuring = log.measuring
    sent_ms = time.time() * 1000
    t0 = time.perf_counter()
    try:
        resp = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        key = type(exc).__name__
        log.statuses[key] = log.statuses.get(key, 0) + 1
        log.refused += measuring
        return
    log.statuses[str(resp.status_code)] = log.statuses.get(str(resp.status_code), 0) + 1
    if resp.status_code != 202:
        log.refused += measuring
    elif measuring:
        log.sent_ms[str(resp.json()["ride_id"])] = sent_ms
        log.post_s.append(time.perf_counter() - t0)


_TIMELINE = """
SELECT r.ride_id,
  extract(epoch from r.requested_at) * 1000 AS row_ms,
  (SELECT extract(epoch from min(o.published_at)) * 1000 FROM outbox o
    WHERE o.key = r.ride_id AND o.topic = $2) AS published_ms,
  LEAST((SELECT min(e.ts) FROM ride_events e WHERE e.ride_id = r.ride_id AND e.type = 'ride.offered'),
        extract(epoch from r.offered_at) * 1000) AS offered_ms
FROM rides r WHERE r.ride_id = ANY($1::text[])
"""
STAGES = (  # (name, from, to): the ride path, request -> outbox -> topic -> matching -> offer
    ("post_to_row", "sent_ms", "row_ms"),
    ("row_to_published", "row_ms", "published_ms"),
    ("published_to_offered", "published_ms", "offered_ms"),
)


async def _timelines(database_url: str, ride_ids: list[str]) -> dict[str, dict[str, float | None]]:
    """Per ride, on one clock (this machine's): the ride row (``requested_at``: the gateway's
    transaction), the outbox row published (``published_at``: after the broker acknowledged it to
    the gateway's relay) and the first offer (the ``ride.offered`` history row, else
    ``rides.offered_at``). ``published_to_offered`` is Kafka's delivery to matching, its queue and
    its assignment work; it can be slightly negative when the offer beats the relay's ack."""
    import asyncpg

    from ridehail.common.postgres import to_asyncpg_dsn
    from ridehail.domain.topics import RIDE_REQUEST

    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(_TIMELINE, ride_ids, RIDE_REQUEST.name)
    finally:
        await conn.close()
    out: dict[str, dict[str, float | None]] = {}
    for r in rows:
        out[r["ride_id"]] = {
            k: (None if r[k] is None else float(r[k])) for k in ("row_ms", "published_ms", "offered_ms")
        }
    return out


def _stage_stats(log: RideLog, timelines: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """p50/p99 of each step of the ride path over the rides that reached its end."""
    out: dict[str, Any] = {}
    for name, a, b in STAGES:
        values = []
        for ride_id, t in timelines.items():
            points = {**t, "sent_ms": log.sent_ms.get(ride_id)}
            if points[a] is not None and points[b] is not None:
                values.append(float(points[b]) - float(points[a]))  # type: ignore[arg-type]
        out[name] = {
            "p50_ms": _pct(values, 50),
            "p99_ms": _pct(values, 99),
            "max_ms": _pct(values, 100),
            "n": len(values),
        }
    return out


SERIES_SPAN_S = 30.0  # at most; a window shorter than 90 s is cut in thirds


def _span(probe: StackProbe, window_start: Sample, start: Sample, end: Sample) -> dict[str, Any]:
    """CPU and RSS of one span of the measured window: does the stack get heavier as it runs?"""
    cores, by = probe.cpu_cores(start, end)
    return {
        "from_s": round(start.at - window_start.at, 1),
        "to_s": round(end.at - window_start.at, 1),
        "cpu_cores_total": round(cores, 3),
        "cpu_cores_by_service": {k: round(v, 3) for k, v in sorted(by.items())},
        "rss_mb_by_service": {k: round(v, 1) for k, v in sorted(end.rss_mb.items())},
    }


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _progress(
    phase: str, elapsed: float, total: float, rss: float, cores: float, log: RideLog, feed: ClientStats, lag: float
) -> str:
    gps = _pct(feed.latencies[-2000:], 99)
    return (
        f"[{phase:7}] {elapsed:5.0f}/{total:.0f} s  rss {rss:6.0f} MB  cpu {cores:4.2f} cores  "
        f"rides {len(log.sent_ms):5d}  feed frames {feed.frames:6d}  gps p99 {gps if gps is not None else '-':>6} ms  "
        f"lag {lag:.0f}"
    )


async def _drive(
    stack: Any,
    database_url: str,
    rides_per_s: float,
    seconds: float,
    warmup_s: float,
    offer_grace_s: float,
    say: Any,
    metric_services: tuple[str, ...] = METRIC_SERVICES,
) -> dict[str, Any]:
    from ridehail.domain.roads import RoadGraph
    from ridehail.simulator.riders import random_trip

    probe = StackProbe(stack.proc.pid)
    rides_needed = math.ceil(rides_per_s * (seconds + warmup_s)) + 10
    tokens = await _tokens(database_url, rides_needed)
    graph = RoadGraph.load()
    rng = random.Random(7)
    trips = [random_trip(graph, rng) for _ in range(rides_needed)]
    del graph
    log = RideLog()
    feed = ClientStats(timing=True, steps={})
    stop = asyncio.Event()
    metrics_urls = [f"http://127.0.0.1:{stack.port(s)}/metrics" for s in metric_services]
    ride_url = f"{stack.gateway_url}/api/rides"
    rss_totals: list[float] = []
    rss_by: dict[str, float] = {}
    series: list[dict[str, Any]] = []  # CPU and RSS over consecutive spans of the window
    span_s = min(SERIES_SPAN_S, max(2.0, seconds / 3))
    lags: dict[str, float] = {}
    client_lags: list[float] = []  # this process's event loop, late by (ms), tick by tick

    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=64)) as client:
        page = await client.get(f"{stack.gateway_url}/")  # a user opens the map: the gateway builds its page
        if page.status_code != 200:
            raise RuntimeError(f"the map page answered {page.status_code}")

        def emit(k: int, _due: float) -> None:
            if k >= len(tokens):
                return
            task = asyncio.create_task(_request_ride(client, ride_url, tokens[k], trips[k], log))
            log.in_flight.add(task)
            task.add_done_callback(log.in_flight.discard)

        metrics = httpx.Client(timeout=1.0)
        started = time.monotonic()
        first = last = span_start = probe.sample()
        counters_first: dict[str, dict[str, float]] = {}
        pg_first = pg_last = postgres_cpu_s()
        cpu_first = cpu_last = CpuTimes.read()  # the machine's CPU shares over the window
        total = warmup_s + seconds
        # started last, right before the block whose finally stops them
        watcher = asyncio.create_task(watch_feed(stack.ws_url, city_bbox(), feed, stop))
        riders = asyncio.create_task(paced(rides_per_s, emit, stop)) if rides_per_s > 0 else None
        lagger = asyncio.create_task(_loop_lag(stop, log, client_lags))
        try:
            while (elapsed := time.monotonic() - started) < total:
                await asyncio.sleep(1.0)
                if watcher.done():
                    watcher.result()  # the feed client failed: say why
                    raise RuntimeError("the websocket client stopped")
                measuring = elapsed >= warmup_s
                if measuring and not log.measuring:
                    log.measuring = feed.measuring = True
                    # off the loop: the feed client times frames
                    first = span_start = await asyncio.to_thread(probe.sample)
                    counters_first = await asyncio.to_thread(batch_counters, metrics, metrics_urls)
                    pg_first = await asyncio.to_thread(postgres_cpu_s)
                    cpu_first = CpuTimes.read()
                    continue
                last = await asyncio.to_thread(probe.sample)
                pg_last = await asyncio.to_thread(postgres_cpu_s)
                cpu_last = CpuTimes.read()
                step_lags = await asyncio.to_thread(consumer_lags, metrics, metrics_urls)
                prev = probe.samples[-2]
                cores, _ = probe.cpu_cores(prev, last)
                rss = sum(last.rss_mb.values())
                if log.measuring:
                    rss_totals.append(rss)
                    for name, mb in last.rss_mb.items():
                        rss_by[name] = max(rss_by.get(name, 0.0), mb)
                    for consumer, lag in step_lags.items():
                        lags[consumer] = max(lags.get(consumer, 0.0), lag)
                    if last.at - span_start.at >= span_s:
                        series.append(_span(probe, first, span_start, last))
                        span_start = last
                lag_now = max(step_lags.values(), default=0.0)
                say(
                    _progress("measure" if log.measuring else "warm-up", elapsed, total, rss, cores, log, feed, lag_now)
                )
            if log.measuring and last.at - span_start.at > 1.0:
                series.append(_span(probe, first, span_start, last))  # the window's last, shorter span
            counters_last = await asyncio.to_thread(batch_counters, metrics, metrics_urls)
            batches = batch_window(counters_first, counters_last, time.monotonic() - first.at)
        finally:
            log.measuring = feed.measuring = False
            stop.set()
            for t in [watcher, lagger, *([riders] if riders else [])]:
                with contextlib.suppress(Exception):
                    await t
            metrics.close()
        cores_total, cores_by = probe.cpu_cores(first, last)
        if log.in_flight:
            await asyncio.wait(list(log.in_flight), timeout=15)
    ride_ids = list(log.sent_ms)
    deadline = time.monotonic() + offer_grace_s
    timelines: dict[str, dict[str, float | None]] = {}
    while True:
        timelines = await _timelines(database_url, ride_ids)
        offered = sum(1 for t in timelines.values() if t["offered_ms"] is not None)
        if offered >= len(ride_ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    offers = {r: t["offered_ms"] for r, t in timelines.items() if t["offered_ms"] is not None}
    waits = [(float(offers[r]) - log.sent_ms[r]) / 1000 for r in ride_ids if offers.get(r) is not None]
    unanswered = len(ride_ids) - len(waits) + log.refused  # no offer, or no ride at all
    offer_stats = uncensored_percentiles_ms(waits, unanswered, qs=(50, 95, 99))
    return {
        "rss_mb_total": round(max(rss_totals), 1) if rss_totals else None,
        "rss_mb_total_median": round(float(np.median(rss_totals)), 1) if rss_totals else None,
        "rss_mb_by_service": {k: round(v, 1) for k, v in sorted(rss_by.items())},
        "cpu_cores_total": round(cores_total, 3),
        "cpu_cores_by_service": {k: round(v, 3) for k, v in sorted(cores_by.items())},
        "request_to_offer_p50_ms": offer_stats["p50"],
        "request_to_offer_p95_ms": offer_stats["p95"],
        "request_to_offer_p99_ms": offer_stats["p99"],
        "request_to_offer": offer_stats,
        "ride_path_stages": _stage_stats(log, timelines),
        "rides_requested": len(ride_ids) + log.refused,
        "rides_refused": log.refused,
        "rides_offered": len(waits),
        "ride_post_statuses": dict(sorted(log.statuses.items())),
        "ride_post_p50_ms": _pct([x * 1000 for x in log.post_s], 50),
        "ride_post_p99_ms": _pct([x * 1000 for x in log.post_s], 99),
        "gps_to_client_p50_ms": _pct(feed.latencies, 50),
        "gps_to_client_p99_ms": _pct(feed.latencies, 99),
        "gps_to_client_samples": len(feed.latencies),
        "gps_steps": step_delivery(feed.steps or {}),
        "client_loop_lag_p99_ms": _pct(client_lags, 99),
        "client_loop_lag_max_ms": round(max(client_lags), 1) if client_lags else None,
        "feed_frames": feed.frames,
        "feed_car_updates": feed.car_updates,
        "feed_entries_resent": feed.resent,
        "consumer_lag_max": max(lags.values(), default=0.0),
        "consumer_lag_max_by_consumer": dict(sorted(lags.items())),
        "consumer_batches": batches,
        "postgres_cpu_cores_machine": round((pg_last - pg_first) / max(1e-9, last.at - first.at), 3),
        "measured_seconds": round(last.at - first.at, 2),
        "series": series,
        WINDOW_CPU_SHARES: cpu_shares(cpu_first, cpu_last),
    }


# Chosen by the bench or by `ridehail up` itself: the broker (--broker), the fleet (--drivers), no
# simulated riders (the bench requests the rides), the database and state folder (throw-away).
OWNED_SETTINGS = frozenset(
    {
        "RIDEHAIL_BROKER",
        "RIDEHAIL_KAFKA_BROKERS",
        "RIDEHAIL_KAFKA_BOOTSTRAP",
        "RIDEHAIL_DRIVERS",
        "RIDEHAIL_RIDERS_PER_MIN",
        "RIDEHAIL_DATABASE_URL",
        "RIDEHAIL_STATE_DIR",
    }
)
WINDOW_CPU_SHARES = "window_cpu_shares"


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs for the stack's environment (``--set``); :class:`ValueError`, before
    anything starts, for a pair that is not one, a name no service knows, or one the bench or
    ``ridehail up`` decides (:data:`OWNED_SETTINGS`, every port)."""
    from ridehail.common.settings import known_setting_names

    known = known_setting_names()
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set takes NAME=VALUE, got {pair!r}")
        if name not in known:
            raise ValueError(f"--set takes a ridehail setting (RIDEHAIL_..., see .env.example); {name!r} is none")
        if name in OWNED_SETTINGS or name.endswith("_PORT"):
            raise ValueError(f"{name} is chosen by the bench (--broker, --drivers, free ports, a throw-away database)")
        out[name] = value.strip()
    return out


def broker_env(broker: str, kafka_brokers: int = 1) -> dict[str, str]:
    """What ``ridehail up`` needs in its environment to run on ``broker``; :class:`ValueError` for
    an unknown broker, or nodes asked of tansu. A local Kafka's node i listens on the client and
    controller ports + i: one run of 2 x nodes free ports holds both."""
    if broker == "tansu":
        if kafka_brokers != 1:
            raise ValueError("--kafka-brokers is only for --broker kafka")
        return {}
    if broker != "kafka":
        raise ValueError(f"the broker is tansu or kafka, not {broker!r}")
    from ridehail.common.ports import free_port_run

    base = free_port_run(2 * kafka_brokers)
    return {
        "RIDEHAIL_BROKER": "kafka",
        "RIDEHAIL_KAFKA_BROKERS": str(kafka_brokers),
        "RIDEHAIL_BROKER_PORT": str(base),
        "RIDEHAIL_KAFKA_CONTROLLER_PORT": str(base + kafka_brokers),
    }


def run_stack_bench(
    drivers: int,
    rides_per_s: float,
    seconds: float,
    *,
    warmup_s: float = 15.0,
    offer_grace_s: float = 15.0,
    admin_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    broker: str = "tansu",
    kafka_brokers: int = 1,
    say: Any = print,
) -> dict[str, Any]:
    """``broker``: ``tansu`` (the embedded broker, as ``ridehail up`` runs by default) or ``kafka``
    (``RIDEHAIL_BROKER=kafka``: a fresh local Apache Kafka cluster of ``kafka_brokers`` nodes, its
    JVMs counted with the stack)."""
    from ridehail.catalog import DEFAULT_SHARED_PROCESSES, process_groups
    from ridehail.harness.scratch import temporary_database
    from ridehail.harness.up_process import start_stack, wait_ready

    env = {**(extra_env or {}), **broker_env(broker, kafka_brokers)}
    # Which services share a process (RIDEHAIL_SHARED_PROCESSES): every process's /metrics shows
    # all of it, so each process is read once, through its first service's port.
    # an empty value is ignored, as the settings ignore it
    groups = process_groups(env.get("RIDEHAIL_SHARED_PROCESSES") or DEFAULT_SHARED_PROCESSES)
    metric_services = tuple(g[0] for g in groups if g[0] in METRIC_SERVICES)

    load_start = [round(x, 2) for x in os.getloadavg()]
    probe_ms = speed_probe_ms()  # before the stack starts: how fast this machine is right now
    started_at = time.time()
    with (
        temporary_database(admin_url, prefix="ridehail_bench_stack") as database_url,
        tempfile.TemporaryDirectory(prefix="ridehail-bench-stack-") as state,
    ):
        stack = start_stack(database_url, Path(state), drivers, env, up_args=("--riders-per-min", "0"))
        try:
            say(f"starting ridehail up --drivers {drivers} (free ports, a throw-away database)")
            wait_ready(stack, timeout_s=180)
            say("the stack is up: warming up")
            result = asyncio.run(
                _drive(stack, database_url, rides_per_s, seconds, warmup_s, offer_grace_s, say, metric_services)
            )
        finally:
            stack.shutdown()
    window_cpu = result.pop(WINDOW_CPU_SHARES)
    return {
        "benchmark": "stack",
        "drivers": drivers,
        "rides_per_s": rides_per_s,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "broker": broker if broker == "tansu" else f"kafka ({kafka_brokers} node{'s' if kafka_brokers > 1 else ''})",
        "processes": ["+".join(g) for g in groups],  # the keys of rss_mb_by_service, besides broker and supervisor
        **result,
        "targets": TARGETS,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "speed_probe_ms_at_start": probe_ms,  # ridehail.bench.machine.speed_probe_ms: lower is faster
            **window_cpu,  # over the measured window only
        },
        "settings": dict(sorted((extra_env or {}).items())),
        "started_at": round(started_at, 1),
        "what_it_counts": "RSS and CPU of ridehail up and every process it started except Postgres; "
        "the load generator and websocket client (this process) are not counted",
    }
