"""``ridehail bench pricing``: surge throughput, whole-city recompute time, quote latency.

Phases, each on real infrastructure (a private embedded broker, a throw-away Postgres database):

* **consume**: ``drivers`` x ``pings_per_driver`` location pings and ``requests`` ride requests are
  produced to the real topics first, then the pricing service's own consumer
  (:class:`~ridehail.common.kafka.BatchConsumer` + :class:`~ridehail.pricing.service.SurgeHandler`:
  fetch, decode, apply, store offsets) drains them: ``events_per_s`` counts from its first batch to
  its last. ``book_events_per_s`` is the in-memory apply alone (no Kafka, no decoding).
* **recompute**: every cell of the city recomputed from that state (``recompute_ms`` p50/p99).
* **quotes**: a gateway child process (the real app: auth check, routing, surge, Postgres insert)
  and ``clients`` concurrent clients in this process posting random city trips for ``seconds``
  (``quote_p50_ms``/``quote_p99_ms``, ``quotes_per_s``); plus the landmark routes' error against
  exact Dijkstra on random trips (``route_time_error_p50/p95``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing as mp
import random
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ridehail.domain.geo import SERVICE_AREA


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(p * len(s))) - 1))], 3)


def _point(rng: random.Random) -> tuple[float, float]:
    a = SERVICE_AREA
    return rng.uniform(a.min_lat + 0.01, a.max_lat - 0.01), rng.uniform(a.min_lon + 0.01, a.max_lon - 0.01)


# -- consume + recompute ---------------------------------------------------------------------------------
def _produce(bootstrap: str, drivers: int, pings_per_driver: int, requests: int, seed: int) -> int:
    from ridehail.common.kafka import EventProducer
    from ridehail.domain.events import DriverLocation, DriverStatus, LatLon, RideRequested, encode, now_ms
    from ridehail.domain.topics import DRIVER_LOCATION, RIDE_REQUEST

    rng = random.Random(seed)
    producer = EventProducer(bootstrap, "bench-pricing", **{"linger.ms": 20, "batch.num.messages": 10_000})
    now = now_ms()
    hot = [_point(rng) for _ in range(8)]
    positions = [_point(rng) for _ in range(drivers)]
    n = 0
    for seq in range(1, pings_per_driver + 1):
        for d, (lat, lon) in enumerate(positions):
            lat += rng.uniform(-2e-4, 2e-4)
            lon += rng.uniform(-2e-4, 2e-4)
            positions[d] = (lat, lon)
            status: DriverStatus = "available" if rng.random() < 0.6 else "on_trip"
            ping = DriverLocation(
                event_id=f"b{d}-{seq}", ts=now - 1000, driver_id=f"bd{d}", seq=seq, lat=lat, lon=lon, status=status
            )
            producer.produce(DRIVER_LOCATION.name, encode(ping), f"bd{d}")
            n += 1
    for r in range(requests):
        lat, lon = rng.choice(hot) if rng.random() < 0.5 else _point(rng)
        lat += rng.uniform(-2e-3, 2e-3)
        dlat, dlon = _point(rng)
        ev = RideRequested(
            ride_id=f"br{r}", rider_id="bench", pickup=LatLon(lat, lon), dropoff=LatLon(dlat, dlon), ts=now - 500
        )
        producer.produce(RIDE_REQUEST.name, encode(ev), f"br{r}")
        n += 1
    producer.flush(60)
    producer.close()
    return n


async def _consume(bootstrap: str, total: int) -> dict[str, Any]:
    from ridehail.common.batch_consumer import BatchConsumer, Decoded, Rejected
    from ridehail.common.kafka import EventProducer
    from ridehail.domain.events import DriverLocation, EventDecoder, RideRequested
    from ridehail.domain.surge import SurgeBook
    from ridehail.domain.topics import DRIVER_LOCATION, RIDE_REQUEST
    from ridehail.pricing.service import SurgeHandler

    book = SurgeBook()
    handler = SurgeHandler(book)
    marks: dict[str, float] = {}
    done = asyncio.Event()

    async def timed(batch: list[Decoded]) -> list[Rejected]:
        if "first" not in marks:
            marks["first"] = time.perf_counter()
            marks["first_n"] = len(batch)
        rejected = await handler(batch)
        if handler.applied >= total:
            marks["last"] = time.perf_counter()
            done.set()
        return rejected

    dlq = EventProducer(bootstrap, "bench-pricing-dlq")
    consumer = BatchConsumer(
        bootstrap=bootstrap,
        group_id="bench-pricing",
        topics=[DRIVER_LOCATION.name, RIDE_REQUEST.name],
        decoder=EventDecoder(DriverLocation, RideRequested),
        handler=timed,
        dlq_producer=dlq,
        name="bench-pricing",
        batch_max=5000,
        batch_timeout_ms=100,
        **{"auto.offset.reset": "earliest"},  # type: ignore[arg-type]  # a librdkafka setting, not a keyword
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(done.wait(), timeout=300)
    finally:
        stop.set()
        await task
        dlq.close(2)
    elapsed = marks["last"] - marks["first"]
    counted = handler.applied - int(marks["first_n"])
    return {"book": book, "events": handler.applied, "events_per_s": round(counted / elapsed, 0)}


def _book_rate(book_events: int = 200_000) -> float:
    from ridehail.domain.surge import SurgeBook

    rng = random.Random(7)
    pts = [_point(rng) for _ in range(5000)]
    book = SurgeBook()
    started = time.perf_counter()
    for i in range(book_events):
        lat, lon = pts[i % 5000]
        book.add_location(f"d{i % 10_000}", i, 1_000, lat, lon, True)
    return round(book_events / (time.perf_counter() - started), 0)


def _recompute(book: Any, runs: int = 30) -> dict[str, Any]:
    from ridehail.domain.events import now_ms

    now = now_ms()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        book.recompute(now)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "cells": len(book.last_counts),
        "cells_surging": len(book.snapshot()),
        "drivers_in_window": len(book.drivers),
        "requests_in_window": len(book.requests),
        "recompute_ms": round(statistics.median(times), 3),
        "recompute_p99_ms": _pct(times, 0.99),
    }


# -- quotes ----------------------------------------------------------------------------------------------
def _gateway_child(database_url: str, port: int, riders: int, ctl: Connection) -> None:
    from ridehail.common.logging import configure_logging

    configure_logging("WARNING")
    asyncio.run(_gateway_main(database_url, port, riders, ctl))


async def _gateway_main(database_url: str, port: int, riders: int, ctl: Connection) -> None:
    from ridehail.common.db import make_engine, make_sessionmaker
    from ridehail.common.health import make_server
    from ridehail.domain.events import SurgeChanged
    from ridehail.domain.surge import DEFAULT_RESOLUTION, SurgeBook
    from ridehail.gateway.app import create_app
    from ridehail.gateway.context import GatewayContext
    from ridehail.gateway.hub import Hub
    from ridehail.gateway.quotes_api import trip_router
    from ridehail.gateway.settings import GatewaySettings
    from ridehail.harness.tokens import LocalSigner

    signer = LocalSigner()
    settings = GatewaySettings(database_url=database_url, gateway_port=port)
    engine = make_engine(database_url, pool_size=10)
    hub = Hub()
    rng = random.Random(3)
    book = SurgeBook()
    for _ in range(60):  # some surging cells, so quotes take both paths
        lat, lon = _point(rng)
        hub.apply_surge(
            SurgeChanged(cell=book.cell_of(lat, lon), resolution=DEFAULT_RESOLUTION, multiplier=rng.choice([1.2, 1.5]))
        )
    ctx = GatewayContext(
        settings=settings, session_factory=make_sessionmaker(engine), verifier=signer.verifier(), producer=None
    )
    ctx.hub = hub
    await trip_router()  # build the landmark tables before the clock starts
    gc.collect()  # as `ridehail serve gateway` does: long-lived tables out of the collector's sight
    gc.freeze()
    server = make_server(create_app(ctx), "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    ctl.send([signer.token(f"bench-rider-{i}") for i in range(riders)])
    await asyncio.get_running_loop().run_in_executor(None, ctl.recv)  # "stop"
    server.should_exit = True
    await task
    await engine.dispose()


async def _quote_client(
    port: int, token: str, rng: random.Random, end: float, measure_from: float, out: dict[str, Any]
) -> None:
    """A minimal HTTP/1.1 keep-alive client (httpx's own overhead would dominate at 64 clients)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < end:
            (plat, plon), (dlat, dlon) = _point(rng), _point(rng)
            body = json.dumps({"pickup": {"lat": plat, "lon": plon}, "dropoff": {"lat": dlat, "lon": dlon}}).encode()
            head = (
                f"POST /api/quotes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + body)
            answer = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in answer.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            took = (time.perf_counter() - started) * 1000
            code = answer.split(b" ", 2)[1].decode()
            if started >= measure_from:
                if code == "201":
                    out["latencies"].append(took)
                else:
                    out["errors"][code] = out["errors"].get(code, 0) + 1
    finally:
        writer.close()


async def _quote_clients(port: int, tokens: list[str], seconds: float, warmup_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "errors": {}}
    measure_from = time.perf_counter() + warmup_s
    end = measure_from + seconds
    await asyncio.gather(
        *(_quote_client(port, t, random.Random(i), end, measure_from, out) for i, t in enumerate(tokens))
    )
    latencies: list[float] = out["latencies"]
    return {
        "quote_clients": len(tokens),
        "quote_seconds": seconds,
        "quotes": len(latencies),
        "quotes_per_s": round(len(latencies) / seconds, 1),
        "quote_p50_ms": _pct(latencies, 0.5),
        "quote_p90_ms": _pct(latencies, 0.9),
        "quote_p99_ms": _pct(latencies, 0.99),
        "quote_max_ms": _pct(latencies, 1.0),
        "quote_errors": out["errors"],
    }


def _route_error(samples: int = 300) -> dict[str, Any]:
    import numpy as np

    from ridehail.domain.roads import RoadGraph
    from ridehail.domain.routing import shared_router

    graph = RoadGraph.load()
    router = shared_router()
    rng = np.random.default_rng(5)
    errors, lookups = [], []
    for _ in range(samples):
        a, b = graph.random_node(rng), graph.random_node(rng)
        started = time.perf_counter()
        est = router.estimate_nodes(a, b)
        lookups.append((time.perf_counter() - started) * 1000)
        exact = graph.route(a, b)
        if exact.time_s > 0:
            errors.append(est.duration_s / exact.time_s - 1)
    return {
        "landmarks": int(len(router.landmarks)),
        "route_ms_p50": _pct(lookups, 0.5),
        "route_ms_p99": _pct(lookups, 0.99),
        "route_time_error_p50": _pct(errors, 0.5),
        "route_time_error_p95": _pct(errors, 0.95),
        "route_time_error_max": round(max(errors), 3) if errors else None,
    }


def run_bench(
    json_path: Path | None,
    admin_url: str | None,
    *,
    drivers: int = 10_000,
    pings_per_driver: int = 20,
    requests: int = 5_000,
    clients: int = 64,
    seconds: float = 15.0,
    phases: tuple[str, ...] = ("consume", "quotes"),
) -> dict[str, Any]:
    from ridehail.common.ports import free_port
    from ridehail.harness.scratch import private_broker, temporary_database

    result: dict[str, Any] = {
        "bench": "pricing",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": mp.cpu_count(),
        "targets": {"events_per_s": ">= 50000", "quote_p99_ms": "<= 50"},
    }
    if "consume" in phases:
        with private_broker() as bootstrap:
            produced = _produce(bootstrap, drivers, pings_per_driver, requests, seed=1)
            consumed = asyncio.run(_consume(bootstrap, produced))
        result.update(
            {
                "drivers": drivers,
                "events_produced": produced,
                "events_per_s": consumed["events_per_s"],
                "book_events_per_s": _book_rate(),
            }
        )
        result.update(_recompute(consumed["book"]))
    if "quotes" in phases:
        result.update(_route_error())
        with temporary_database(admin_url) as url:
            port = free_port()
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_gateway_child, args=(url, port, clients, child), daemon=True)
            proc.start()
            try:
                if not parent.poll(120):
                    raise RuntimeError("gateway child did not start within 120 s")
                tokens = parent.recv()
                result.update(asyncio.run(_quote_clients(port, tokens, seconds, warmup_s=2.0)))
            finally:
                parent.send("stop")
                proc.join(20)
                if proc.is_alive():
                    proc.kill()
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
