"""Two matching processes in one consumer group racing for the same drivers never double-assign:
the driver claim is one conditional UPDATE in Postgres."""

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
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, LatLon, RideAssigned, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT
from ridehail.gateway.ride_requests import create_ride
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import matching_process, matching_stats, wait_until

pytestmark = pytest.mark.integration

DRIVERS = 60
RIDES = 150  # more riders than drivers: every driver is fought over


@pytest.fixture
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


@pytest.mark.parametrize("mode", ["greedy", "batched"])
async def test_two_instances_in_one_group_never_double_assign(
    own_broker: str, fresh_database_url: str, tmp_path: Path, mode: str
) -> None:
    rng = random.Random(2)
    ports = [free_port(), free_port()]
    group = f"twins-{mode}"
    procs = [
        matching_process(
            own_broker,
            fresh_database_url,
            port,
            tmp_path / f"matching-{i}.log",
            matching_mode=mode,
            matching_group_id=group,
            matching_batch_window_ms="300",
            driver_presence_ttl_s="600",  # the drivers ping once
        )
        for i, port in enumerate(ports)
    ]
    db = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    engine = make_engine(fresh_database_url)
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    try:

        async def both_own_ride_partitions() -> bool:
            stats = [await matching_stats(p) for p in ports]
            return all(s and s["partitions"]["rides"] > 0 for s in stats)

        assert await wait_until(both_own_ride_partitions, 90), (tmp_path / "matching-0.log").read_text()[-2000:]
        producer = EventProducer(own_broker, f"twins-{mode}")
        for i in range(DRIVERS):
            ping = DriverLocation(
                driver_id=f"{mode}-d{i}",
                seq=1,
                lat=57.70 + rng.uniform(-0.004, 0.004),
                lon=11.97 + rng.uniform(-0.008, 0.008),
            )
            producer.produce(DRIVER_LOCATION.name, encode(ping), ping.driver_id)
        producer.close()
        assert await wait_until(lambda: db.fetchval("SELECT count(*) = $1 FROM drivers", DRIVERS), 30)

        sessions = make_sessionmaker(engine)
        ride_ids = await asyncio.gather(
            *(
                create_ride(
                    sessions,
                    f"rider-{i}",
                    LatLon(57.70 + rng.uniform(-0.003, 0.003), 11.97 + rng.uniform(-0.006, 0.006)),
                    LatLon(57.72, 12.0),
                )
                for i in range(RIDES)
            )
        )

        async def drivers_all_taken() -> bool:
            return await db.fetchval("SELECT count(*) FROM rides WHERE status = 'assigned'") == DRIVERS

        assert await wait_until(drivers_all_taken, 60)
        await asyncio.sleep(2.0)  # give a double booking every chance to show up

        assert await db.fetchval("SELECT count(*) FROM rides WHERE status = 'assigned'") == DRIVERS
        dup = await db.fetch(
            "SELECT driver_id FROM rides WHERE status = 'assigned' GROUP BY driver_id HAVING count(*) > 1"
        )
        assert dup == []
        busy = await db.fetch("SELECT driver_id, current_ride_id FROM drivers")
        assert all(b["current_ride_id"] is not None for b in busy)
        assigned_rides = {
            r["ride_id"]: r["driver_id"]
            for r in await db.fetch("SELECT ride_id, driver_id FROM rides WHERE status = 'assigned'")
        }
        assert {b["current_ride_id"]: b["driver_id"] for b in busy} == assigned_rides
        assert set(assigned_rides) <= set(ride_ids)

        rides_per_driver: dict[str, set[str]] = defaultdict(set)
        for e in collector.events(RideAssigned):
            rides_per_driver[e.driver_id].add(e.ride_id)
        assert len(rides_per_driver) == DRIVERS
        assert all(len(v) == 1 for v in rides_per_driver.values()), "one driver announced for two rides"

        stats = [await matching_stats(p) for p in ports]
        assert all(s is not None for s in stats)
        assert sum(s["assigned"] for s in stats) == DRIVERS  # type: ignore[index]
        if mode == "greedy":
            # greedy takes one waiting ride per transaction, so both instances work at once and race
            # for the same drivers: each either won some claims or lost some to the other instance
            assert all(s["assigned"] + s["claim_conflicts"] > 0 for s in stats), stats  # type: ignore[index]
        # batched: a round locks every waiting ride it sees (FOR UPDATE SKIP LOCKED), so one
        # instance's round may take all of them and the other find none: not a race to require
    finally:
        collector.stop()
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        await engine.dispose()
        await db.close()
