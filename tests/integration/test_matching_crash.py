"""kill -9 the matching process under load, restart it, and prove every ping and every request
took effect exactly once (per-driver last seq, one assignment per ride, one ride per driver)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.common.outbox import OutboxRelay
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, LatLon, RideAssigned, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT
from ridehail.gateway.ride_requests import create_ride
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import matching_process, matching_stats, wait_until

pytestmark = pytest.mark.integration

DRIVERS = 300
SEQS = 60
RIDES_PER_ROUND = 1
KILL_AT_ROUND = 25


@pytest.fixture(scope="module")
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


def _positions(rng: random.Random) -> dict[str, tuple[float, float]]:
    return {
        f"crash-d{i}": (57.70 + rng.uniform(-0.008, 0.008), 11.97 + rng.uniform(-0.015, 0.015)) for i in range(DRIVERS)
    }


async def _joined(port: int) -> bool:
    stats = await matching_stats(port)
    return bool(stats and stats["partitions"]["locations"] and stats["partitions"]["rides"])


async def test_kill_9_under_load_then_restart_applies_everything_exactly_once(
    own_broker: str, fresh_database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(9)
    home = _positions(rng)
    port = free_port()
    log = tmp_path / "matching.log"
    proc = matching_process(own_broker, fresh_database_url, port, log, driver_presence_ttl_s="600")
    db = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    engine = make_engine(fresh_database_url)
    sessions = make_sessionmaker(engine)
    producer = EventProducer(own_broker, "crash-load")
    gateway_relay = OutboxRelay(sessions, EventProducer(own_broker, "crash-gw-relay"), name="gateway")
    stop_relay = asyncio.Event()
    relay_task = asyncio.create_task(gateway_relay.run(stop_relay))
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    ride_ids: list[str] = []
    try:
        assert await wait_until(lambda: _joined(port), 60), log.read_text()[-2000:]
        killed_with: int | None = None
        for seq in range(1, SEQS + 1):
            for driver, (lat, lon) in home.items():
                ping = DriverLocation(driver_id=driver, seq=seq, lat=lat + seq * 1e-5, lon=lon)
                producer.produce(DRIVER_LOCATION.name, encode(ping), driver)
            for _ in range(RIDES_PER_ROUND):
                pickup = LatLon(57.70 + rng.uniform(-0.005, 0.005), 11.97 + rng.uniform(-0.01, 0.01))
                ride_ids.append(await create_ride(sessions, f"rider-{len(ride_ids)}", pickup, LatLon(57.72, 12.0)))
            producer.flush()
            await asyncio.sleep(0.03)
            if seq == KILL_AT_ROUND:
                os.killpg(proc.pid, signal.SIGKILL)  # no shutdown, no offset commit, no goodbye
                proc.wait(10)
                killed_with = await db.fetchval("SELECT coalesce(sum(last_seq), 0) FROM drivers")
                proc = matching_process(own_broker, fresh_database_url, port, log, driver_presence_ttl_s="600")
        producer.close()
        assert killed_with is not None and 0 < killed_with < DRIVERS * SEQS, "the kill must land mid-stream"

        async def all_applied() -> bool:
            done = await db.fetchval("SELECT count(*) FROM drivers WHERE last_seq = $1", SEQS)
            assigned = await db.fetchval("SELECT count(*) FROM rides WHERE status = 'assigned'")
            return done == DRIVERS and assigned == len(ride_ids)

        assert await wait_until(all_applied, 120), log.read_text()[-3000:]
        await asyncio.sleep(1.0)  # let any duplicate deliveries land before counting

        # pings: each driver's row holds its newest ping exactly (seq and position)
        rows = await db.fetch("SELECT driver_id, last_seq, lat FROM drivers")
        assert len(rows) == DRIVERS
        for r in rows:
            assert r["last_seq"] == SEQS
            assert r["lat"] == pytest.approx(home[r["driver_id"]][0] + SEQS * 1e-5)
        # requests: one assignment per ride, one ride per driver, in Postgres...
        per_ride = await db.fetch(
            "SELECT ride_id, count(*) AS n FROM ride_events WHERE type = 'ride.assigned' GROUP BY ride_id"
        )
        assert sorted(r["ride_id"] for r in per_ride) == sorted(ride_ids)
        assert all(r["n"] == 1 for r in per_ride)
        busy = await db.fetch("SELECT driver_id, current_ride_id FROM drivers WHERE current_ride_id IS NOT NULL")
        assert len(busy) == len(ride_ids) and len({b["current_ride_id"] for b in busy}) == len(ride_ids)
        assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
        # ...and on the topic: redelivery may repeat an event, never a second driver for a ride
        assert await wait_until(lambda: len({e.ride_id for e in collector.events(RideAssigned)}) == len(ride_ids), 30)
        drivers_per_ride: dict[str, set[str]] = defaultdict(set)
        rides_per_driver: dict[str, set[str]] = defaultdict(set)
        for e in collector.events(RideAssigned):
            drivers_per_ride[e.ride_id].add(e.driver_id)
            rides_per_driver[e.driver_id].add(e.ride_id)
        assert all(len(v) == 1 for v in drivers_per_ride.values())
        assert all(len(v) == 1 for v in rides_per_driver.values())
    finally:
        collector.stop()
        stop_relay.set()
        await relay_task
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        await engine.dispose()
        await db.close()
