"""Scale-out under failure: three `ridehail serve matching` processes in one consumer group, a
pinging fleet and a stream of ride requests; one instance is killed with -9 mid-stream. Nothing
is lost or applied twice (one driver per ride, one ride per driver, in Postgres and on the
topic), the dead instance's location partitions are consumed again and its requests matched
within 10 s."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, LatLon, RideAssigned, encode, now_ms
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT
from ridehail.gateway.ride_requests import create_ride
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import matching_process, matching_stats, wait_until

pytestmark = pytest.mark.integration

INSTANCES = 3
DRIVERS = 150
RIDES_PER_S = 4.0
BEFORE_KILL_S = 4.0
AFTER_KILL_S = 11.0


@pytest.fixture
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


async def test_kill_9_of_one_of_three_instances_loses_nothing_and_recovers_within_10_s(
    own_broker: str, fresh_database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(16)
    home = {f"fo-d{i:03d}": (57.69 + rng.uniform(0, 0.03), 11.94 + rng.uniform(0, 0.06)) for i in range(DRIVERS)}
    ports = [free_port() for _ in range(INSTANCES)]
    logs = [tmp_path / f"matching-{i}.log" for i in range(INSTANCES)]
    procs = [
        matching_process(
            own_broker, fresh_database_url, port, log, matching_group_id="failover", matching_offers="false"
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    db = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    engine = make_engine(fresh_database_url)
    sessions = make_sessionmaker(engine)
    producer = EventProducer(own_broker, "failover-fleet")
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    seq = 0
    pinging = True

    async def fleet() -> None:  # every driver pings twice a second, all along
        nonlocal seq
        while pinging:
            seq += 1
            for driver, (lat, lon) in home.items():
                producer.produce(
                    DRIVER_LOCATION.name, encode(DriverLocation(driver_id=driver, seq=seq, lat=lat, lon=lon)), driver
                )
            producer.flush()
            await asyncio.sleep(0.5)

    pinger = asyncio.create_task(fleet())
    requested: dict[str, int] = {}
    try:

        async def all_joined() -> bool:
            stats = [await matching_stats(p) for p in ports]
            return all(s and s["partitions"]["locations"] and s["partitions"]["rides"] for s in stats)

        assert await wait_until(all_joined, 120), logs[0].read_text()[-2000:]
        assert await wait_until(lambda: db.fetchval("SELECT count(*) = $1 FROM drivers", DRIVERS), 30)

        async def request_for(seconds: float) -> None:
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                pickup = LatLon(57.69 + rng.uniform(0, 0.03), 11.94 + rng.uniform(0, 0.06))
                ride_id = await create_ride(sessions, f"rider-{len(requested)}", pickup, LatLon(57.72, 12.0))
                requested[ride_id] = now_ms()
                await asyncio.sleep(1 / RIDES_PER_S)

        await request_for(BEFORE_KILL_S)
        victim = 0
        os.killpg(procs[victim].pid, signal.SIGKILL)  # mid-stream: no shutdown, no offset commit
        procs[victim].wait(10)
        killed_at, seq_at_kill = now_ms(), seq
        before_kill = set(requested)
        requests = asyncio.create_task(request_for(AFTER_KILL_S))

        # the dead instance's location partitions: every driver's newer pings applied again
        async def pings_flow_again() -> bool:
            return bool(await db.fetchval("SELECT min(last_seq) FROM drivers") > seq_at_kill + 1)

        assert await wait_until(pings_flow_again, 30)
        recovered_ms = now_ms() - killed_at
        await requests

        async def all_assigned() -> bool:
            n = await db.fetchval("SELECT count(*) FROM rides WHERE status = 'assigned'")
            return bool(n == len(requested))

        assert await wait_until(all_assigned, 60), await db.fetch("SELECT status, count(*) FROM rides GROUP BY 1")
        await asyncio.sleep(1.0)  # let any duplicate delivery land before counting
        pinging = False
        await pinger

        rows = await db.fetch(
            "SELECT ride_id, driver_id, (extract(epoch from assigned_at) * 1000)::bigint AS at FROM rides"
        )
        assert {r["ride_id"] for r in rows} == set(requested)
        assert len({r["driver_id"] for r in rows}) == len(rows)  # one ride per driver
        per_ride = await db.fetch(
            "SELECT ride_id, count(*) AS n FROM ride_events WHERE type = 'ride.assigned' GROUP BY 1"
        )
        assert len(per_ride) == len(requested) and all(r["n"] == 1 for r in per_ride)  # applied once each
        busy = await db.fetch("SELECT driver_id, current_ride_id FROM drivers WHERE current_ride_id IS NOT NULL")
        assert {b["current_ride_id"]: b["driver_id"] for b in busy} == {r["ride_id"]: r["driver_id"] for r in rows}
        # requests made after the kill were matched within 10 s, whichever partition they landed on
        after = [r["at"] - requested[r["ride_id"]] for r in rows if r["ride_id"] not in before_kill]
        assert after and max(after) < 10_000, sorted(after)[-5:]
        assert recovered_ms < 10_000, recovered_ms

        assert await wait_until(lambda: len({e.ride_id for e in collector.events(RideAssigned)}) == len(requested), 30)
        drivers_per_ride: dict[str, set[str]] = defaultdict(set)
        rides_per_driver: dict[str, set[str]] = defaultdict(set)
        for e in collector.events(RideAssigned):
            drivers_per_ride[e.ride_id].add(e.driver_id)
            rides_per_driver[e.driver_id].add(e.ride_id)
        assert all(len(v) == 1 for v in drivers_per_ride.values())
        assert all(len(v) == 1 for v in rides_per_driver.values())
        survivors = [await matching_stats(p) for p in ports[1:]]
        assert sum(s["partitions"]["locations"] for s in survivors if s) == 12  # the victim's share taken over
    finally:
        pinging = False
        if not pinger.done():
            pinger.cancel()
        collector.stop()
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        producer.close()
        await engine.dispose()
        await db.close()
