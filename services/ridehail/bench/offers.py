"""``ridehail bench offers``: matching and a simulated fleet answering offers, on a private broker
and a throw-away database; ride requests at a steady rate; acceptance, answer latency, request to
assignment latency, offers per ride, and the double-booking check, as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.harness.scratch import private_broker, temporary_database


def run_offers_bench(
    json_path: Path | None,
    admin_url: str | None = None,
    *,
    drivers: int = 300,
    requests: int = 150,
    rps: float = 5.0,
    accept_probability: float = 0.9,
    offer_timeout_s: float = 5.0,
    seed: int = 7,
) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    with private_broker() as bootstrap, temporary_database(admin_url) as database_url:
        result = asyncio.run(
            _run(bootstrap, database_url, drivers, requests, rps, accept_probability, offer_timeout_s, seed)
        )
    result["load_average"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def _run(
    bootstrap: str,
    database_url: str,
    drivers: int,
    requests: int,
    rps: float,
    accept_probability: float,
    offer_timeout_s: float,
    seed: int,
) -> dict[str, Any]:
    from ridehail.common.kafka import EventProducer
    from ridehail.domain.events import LatLon, RideRequested, encode
    from ridehail.domain.topics import RIDE_REQUEST
    from ridehail.harness.services import wait_until
    from ridehail.matching.main import MatchingService
    from ridehail.matching.settings import MatchingSettings
    from ridehail.simulator.main import SimulatorService
    from ridehail.simulator.settings import SimulatorSettings

    stop = asyncio.Event()
    matching = MatchingService(
        MatchingSettings(
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            matching_port=free_port(),
            matching_offer_timeout_s=offer_timeout_s,
        )
    )
    simulator = SimulatorService(
        SimulatorSettings(
            kafka_bootstrap=bootstrap,
            simulator_port=free_port(),
            drivers=drivers,
            seed=seed,
            mean_online_min=0.0,
            offer_accept_probability=accept_probability,
            driver_cancel_probability=0.0,
        ),
        serve_http=False,
    )
    tasks = [asyncio.create_task(matching.run(stop)), asyncio.create_task(simulator.run(stop))]
    producer = EventProducer(bootstrap, "bench-offers")
    try:
        if not await wait_until(lambda: matching.engine.presence.present >= drivers * 0.95, 90):
            raise RuntimeError(f"only {matching.engine.presence.present} drivers reached matching")
        rng = np.random.default_rng(seed)
        graph = simulator.graph
        started = time.monotonic()
        for i in range(requests):
            delay = started + i / rps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pickup = graph.node_position(graph.random_node(rng))
            dropoff = graph.node_position(graph.random_node(rng))
            ride_id = f"bench-offer-{i:05d}"
            event = RideRequested(
                ride_id=ride_id,
                rider_id=f"bench-rider-{i % 50}",
                pickup=LatLon(pickup[0], pickup[1]),
                dropoff=LatLon(dropoff[0], dropoff[1]),
            )
            producer.produce(RIDE_REQUEST.name, encode(event), ride_id)
        producer.flush()
        conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
        try:

            async def settled() -> bool:
                n = await conn.fetchval("SELECT count(*) FROM rides WHERE status IN ('requested', 'offered')")
                return bool(n == 0)

            await wait_until(settled, 120)
            rows = await conn.fetch(
                "SELECT status, offer_attempts, "
                "extract(epoch from (assigned_at - requested_at)) * 1000 AS to_assigned_ms FROM rides"
            )
            double = await conn.fetchval(
                "SELECT count(*) FROM (SELECT driver_id FROM rides WHERE status IN ('offered', 'assigned', "
                "'arrived', 'in_progress') AND driver_id IS NOT NULL GROUP BY driver_id HAVING count(*) > 1) d"
            )
        finally:
            await conn.close()
        offers = matching.stats()["offers"]
    finally:
        producer.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    assigned = [float(r["to_assigned_ms"]) for r in rows if r["to_assigned_ms"] is not None]
    tries = [int(r["offer_attempts"]) for r in rows if r["to_assigned_ms"] is not None]
    return {
        "drivers": drivers,
        "requests": requests,
        "requests_per_s": rps,
        "accept_probability_setting": accept_probability,
        "offer_timeout_s": offer_timeout_s,
        "offers_sent": offers["sent"],
        "offers_accepted": offers["accepted"],
        "offers_declined": offers["declined"],
        "offers_timed_out": offers["timed_out"],
        "answers_ignored": offers["ignored"],
        "acceptance_rate": offers["acceptance_rate"],
        "offer_answer_p50_ms": offers["answer_p50_ms"],
        "offer_answer_p99_ms": offers["answer_p99_ms"],
        "request_to_assigned_p50_ms": _pct(assigned, 50),
        "request_to_assigned_p99_ms": _pct(assigned, 99),
        "offers_per_assigned_ride_mean": round(float(np.mean(tries)), 3) if tries else None,
        "ride_statuses": statuses,
        "double_booked_drivers": int(double),
    }
