"""``ridehail bench matching`` phase 2: REST request -> ``RideAssigned`` latency against a real matching
process, the rides API served here (with its outbox relay, as in the gateway)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from ridehail.bench.matching_support import WARMUP_REQUESTS, percentile, random_points, stop_group, wait_joined
from ridehail.common.health import make_server
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, RideAssigned, RideExpired, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.harness.events import EventCollector
from ridehail.harness.services import matching_process, matching_stats, rides_app, wait_until
from ridehail.harness.tokens import LocalSigner

log = get_logger(__name__)


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
        driver_presence_ttl_s="3600",  # the parked fleet pings once (as in every earlier run of this phase)
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
        await wait_joined(port)
        producer = EventProducer(bootstrap, "bench-fleet")
        for i, (lat, lon) in enumerate(random_points(rng, drivers)):
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
            accepted: dict[str, float] = {}
            posted: dict[str, float] = {}
            errors = 0
            error_statuses: dict[str, int] = {}
            n = int(rps * seconds)
            # one rider per request: a rider holds one active ride at a time, under a request rate limit
            tokens = [signer.token(f"bench-rider-{i}") for i in range(n + WARMUP_REQUESTS)]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as client:
                pickups = random_points(rng, n + WARMUP_REQUESTS)
                dropoffs = random_points(rng, n + WARMUP_REQUESTS)

                async def one(i: int) -> None:
                    nonlocal errors
                    body = {
                        "pickup": {"lat": float(pickups[i, 0]), "lon": float(pickups[i, 1])},
                        "dropoff": {"lat": float(dropoffs[i, 0]), "lon": float(dropoffs[i, 1])},
                    }
                    t0 = time.time()
                    r = await client.post("/api/rides", json=body, headers={"Authorization": f"Bearer {tokens[i]}"})
                    if r.status_code != 202:
                        errors += 1
                        error_statuses[str(r.status_code)] = error_statuses.get(str(r.status_code), 0) + 1
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
            "assign_p50_ms": round(percentile(latencies, 50), 1),
            "assign_p99_ms": round(percentile(latencies, 99), 1),
            "assign_max_ms": round(max(latencies), 1) if latencies else None,
            "assign_from_post_p50_ms": round(percentile(from_post, 50), 1),
            "assign_from_post_p99_ms": round(percentile(from_post, 99), 1),
            "assign_requests": len(accepted),
            "assign_request_errors": errors,
            "assign_request_error_statuses": error_statuses,
            "assign_requests_per_s": rps,
            "assign_drivers": drivers,
            "assign_expired": expired,
            "assign_mean_pickup_eta_s": round(statistics.mean(r["eta"] for r in pickup_etas), 1)
            if pickup_etas
            else None,
            "assign_hops_ms": {
                hop: {"p50": round(percentile(v, 50), 1), "p99": round(percentile(v, 99), 1)} for hop, v in hops.items()
            },
            "lost": lost,
            "double_assigned": int(double + db_double),
        }
    finally:
        stop.set()
        collector.stop()
        request_collector.stop()
        await db.close()
        stop_group(proc)


async def _stat_equals(port: int, key: str, value: int) -> bool:
    stats = await matching_stats(port)
    return bool(stats and stats.get(key) == value)
