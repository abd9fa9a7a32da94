"""The simulator against the real embedded broker: pings keyed by driver id, a ride carried out
from an assignment on the topic, bad assignments dead-lettered while the fleet keeps going."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, Message
from fastapi import FastAPI

from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.domain.events import (
    DriverLocation,
    EventDecoder,
    LatLon,
    RideArrived,
    RideAssigned,
    RideCompleted,
    RidePickedUp,
    encode,
)
from ridehail.domain.roads import RoadGraph
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT
from ridehail.simulator.drivers import FleetConfig
from ridehail.simulator.fleet import Fleet
from ridehail.simulator.legs import remainder_to_next_node
from ridehail.simulator.riders import RiderSimulator
from ridehail.simulator.runtime import FleetRunner, make_consumer
from tests.fixtures.auth import AuthService

pytestmark = pytest.mark.integration


@dataclass
class RunningSimulator:
    fleet: Fleet
    runner: FleetRunner
    prefix: str
    consumer_ready: Callable[[], bool]


@pytest.fixture
async def simulator(broker: str) -> AsyncIterator[RunningSimulator]:
    prefix = f"it{uuid.uuid4().hex[:6]}-"
    graph = RoadGraph.load()
    fleet = Fleet(
        graph,
        FleetConfig(drivers=4, interval=1.0, seed=3, prefix=prefix, mean_online_min=0.0, pickup_wait_s=3.0),
    )
    producer = EventProducer(broker, "sim-test")
    dlq = EventProducer(broker, "sim-test-dlq")
    runner = FleetRunner(fleet, producer, time_scale=40.0)  # 40 simulated seconds per second
    consumer, _ = make_consumer(broker, fleet, runner, dlq, group_id=f"sim-test-{prefix}")
    stop = asyncio.Event()
    tasks = [asyncio.create_task(runner.run(stop)), asyncio.create_task(consumer.run(stop))]
    try:
        yield RunningSimulator(fleet, runner, prefix, lambda: bool(consumer.stats.partitions))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        producer.close(5)
        dlq.close(5)


def topic_reader(broker: str, topic: str) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    c.subscribe([topic])
    return c


async def read_until(
    consumer: Consumer, done: Callable[[list[Message]], bool], timeout_s: float = 60.0
) -> list[Message]:
    loop = asyncio.get_running_loop()
    seen: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = await loop.run_in_executor(None, consumer.consume, 500, 0.3)
        seen.extend(m for m in batch if m.error() is None)
        if done(seen):
            return seen
    raise AssertionError(f"the awaited messages did not arrive within {timeout_s:.0f}s ({len(seen)} others did)")


async def wait_ready(sim: RunningSimulator, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not sim.consumer_ready():
        assert time.monotonic() < deadline, "simulator's ride-event consumer never got partitions"
        await asyncio.sleep(0.1)


def assignment_for(sim: RunningSimulator, driver_index: int, ride_id: str) -> RideAssigned:
    """A pickup about 1-2 simulated minutes from the driver and a drop-off 1.5+ minutes further."""
    graph = sim.fleet.graph
    d = sim.fleet.drivers[driver_index]
    start = remainder_to_next_node(d.leg, d.cursor)[0]  # the driver's next intersection
    times = graph.etas_from(start, np.arange(graph.n))
    pickup = int(np.flatnonzero((times > 60) & (times < 120))[0])
    onward = graph.etas_from(pickup, np.arange(graph.n))
    dropoff = int(np.flatnonzero((onward > 90) & (onward < 180))[0])
    plat, plon = graph.node_position(pickup)
    dlat, dlon = graph.node_position(dropoff)
    return RideAssigned(
        ride_id=ride_id,
        rider_id="rider-it",
        driver_id=d.driver_id,
        pickup=LatLon(lat=plat, lon=plon),
        dropoff=LatLon(lat=dlat, lon=dlon),
        eta_s=90.0,
    )


async def test_pings_land_on_the_topic_keyed_by_driver_id(broker: str, simulator: RunningSimulator) -> None:
    reader = topic_reader(broker, DRIVER_LOCATION.name)
    decoder = EventDecoder(DriverLocation)
    try:
        ours = lambda ms: [m for m in ms if (m.key() or b"").decode().startswith(simulator.prefix)]  # noqa: E731
        messages = await read_until(reader, lambda ms: len({m.key() for m in ours(ms)}) == 4 and len(ours(ms)) >= 40)
    finally:
        reader.close()
    mine = ours(messages)
    assert len({m.key() for m in mine}) == 4
    last_seq: dict[str, int] = {}
    partitions: dict[str, set[int]] = {}
    for m in mine:
        ping = decoder.decode(m.value())
        assert isinstance(ping, DriverLocation)
        assert m.key().decode() == ping.driver_id
        assert ping.seq > last_seq.get(ping.driver_id, -1)  # per-partition order keeps seq increasing
        last_seq[ping.driver_id] = ping.seq
        partitions.setdefault(ping.driver_id, set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())  # one key, one partition


async def test_assignment_on_the_topic_makes_the_driver_complete_the_ride(
    broker: str, simulator: RunningSimulator
) -> None:
    await wait_ready(simulator)
    ride_id = f"ride-{uuid.uuid4().hex[:10]}"
    producer = EventProducer(broker, "matching-stand-in")
    reader = topic_reader(broker, RIDE_EVENT.name)
    decoder = EventDecoder(RideAssigned, RideArrived, RidePickedUp, RideCompleted)
    try:
        assigned = assignment_for(simulator, 0, ride_id)
        await producer.send(RIDE_EVENT.name, encode(assigned), ride_id)

        def types(ms: list[Message]) -> list[type]:
            return [type(decoder.decode(m.value())) for m in ms if m.key() == ride_id.encode()]

        messages = await read_until(reader, lambda ms: RideCompleted in types(ms), timeout_s=90)
    finally:
        reader.close()
        producer.close(5)
    assert types(messages) == [RideAssigned, RideArrived, RidePickedUp, RideCompleted]
    completed = decoder.decode([m for m in messages if m.key() == ride_id.encode()][-1].value())
    assert isinstance(completed, RideCompleted)
    assert completed.driver_id == assigned.driver_id and completed.rider_id == "rider-it"
    assert completed.distance_m > 0 and completed.duration_s > 0
    assert simulator.fleet.drivers[0].ride is None


async def test_bad_assignments_are_dead_lettered_and_the_fleet_keeps_going(
    broker: str, simulator: RunningSimulator
) -> None:
    await wait_ready(simulator)
    producer = EventProducer(broker, "matching-stand-in-2")
    dlq_reader = topic_reader(broker, RIDE_EVENT.dlq)
    event_reader = topic_reader(broker, RIDE_EVENT.name)
    tag = uuid.uuid4().hex[:8]
    unknown = RideAssigned(
        ride_id=f"bad-unknown-{tag}",
        driver_id=f"{simulator.prefix}99999",
        pickup=LatLon(lat=57.7, lon=11.97),
        dropoff=LatLon(lat=57.71, lon=11.98),
    )
    far = RideAssigned(
        ride_id=f"bad-far-{tag}",
        driver_id=simulator.fleet.drivers[1].driver_id,
        pickup=LatLon(lat=59.33, lon=18.07),
        dropoff=LatLon(lat=57.71, lon=11.98),
    )
    good = assignment_for(simulator, 2, f"good-{tag}")
    busy = RideAssigned(
        ride_id=f"bad-busy-{tag}",
        driver_id=good.driver_id,
        pickup=good.pickup,
        dropoff=good.dropoff,
    )
    try:
        for event in (unknown, far, good, busy):
            await producer.send(RIDE_EVENT.name, encode(event), event.ride_id)
        await producer.send(RIDE_EVENT.name, b"{not json", f"garbage-{tag}")
        bad_keys = {e.ride_id.encode() for e in (unknown, far, busy)} | {f"garbage-{tag}".encode()}
        dead = await read_until(dlq_reader, lambda ms: bad_keys <= {m.key() for m in ms}, timeout_s=60)
        reasons = {m.key(): dict(m.headers() or [])[("error.reason")].decode() for m in dead if m.key() in bad_keys}
        assert "unknown driver" in reasons[unknown.ride_id.encode()]
        assert "unreachable" in reasons[far.ride_id.encode()]
        assert "busy with ride" in reasons[busy.ride_id.encode()]
        assert "malformed JSON" in reasons[f"garbage-{tag}".encode()]
        # ... and the good assignment in the same stream is still carried out
        decoder = EventDecoder(RideAssigned, RideArrived, RidePickedUp, RideCompleted)
        done = await read_until(
            event_reader,
            lambda ms: any(
                m.key() == good.ride_id.encode() and isinstance(decoder.decode(m.value()), RideCompleted) for m in ms
            ),
            timeout_s=90,
        )
        completed = [
            m for m in done if m.key() == good.ride_id.encode() and isinstance(decoder.decode(m.value()), RideCompleted)
        ]
        assert len(completed) == 1, "the good assignment was not carried out to its completion exactly once"
        assert simulator.runner.stats.pings > 0
    finally:
        for c in (dlq_reader, event_reader):
            with contextlib.suppress(Exception):
                c.close()
        producer.close(5)


# -- riders through the real REST API -----------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_rides_api(database_url: str, jwks_url: str) -> AsyncIterator[FastAPI]:
    """The gateway's rides router on the session database, verifying tokens of the real auth."""
    from ridehail.common.auth_tokens import TokenVerifier
    from ridehail.harness.services import gateway_api

    async with gateway_api(database_url, TokenVerifier(jwks_url)) as app:
        yield app


async def test_riders_request_and_cancel_rides_as_authenticated_users(
    auth_service: AuthService, database_url: str, pg: asyncpg.Connection
) -> None:
    gateway = "http://gateway.test"
    async with (
        gateway_rides_api(database_url, auth_service.jwks_url) as app,
        httpx.AsyncClient(mounts={gateway: httpx.ASGITransport(app=app)}, timeout=httpx.Timeout(30.0)) as client,
    ):
        riders = RiderSimulator(
            RoadGraph.load(),
            auth_service.base_url,
            gateway,
            rides_per_min=240.0,
            accounts=2,
            patience_s=1.0,
            seed=4,
            email_prefix=f"it-rider-{uuid.uuid4().hex[:6]}",
            poll_interval_s=0.3,
            client=client,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(riders.run(stop))
        deadline = time.monotonic() + 60
        while riders.stats.cancelled < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await task
    assert riders.stats.accepted >= 2, riders.stats
    assert riders.stats.cancelled >= 2, riders.stats
    assert riders.stats.failed == 0, riders.stats  # never a second active ride for one account (409)
    rows = await pg.fetch(
        "SELECT r.ride_id, r.status, r.pickup_lat, r.pickup_lon, u.email FROM rides r "
        "JOIN users u ON u.id::text = r.rider_id WHERE u.email LIKE $1",
        riders.accounts[0].email.split("-0001@")[0] + "%",
    )
    assert len(rows) == riders.stats.accepted  # every accepted ride is in the database, as its rider's
    assert sum(1 for r in rows if r["status"] == "cancelled") >= 2
    graph = RoadGraph.load()
    for r in rows:
        node, dist = graph.nearest_node_with_distance(r["pickup_lat"], r["pickup_lon"])
        assert dist < 1.0  # pickups are intersections of the road network


async def test_riders_survive_an_unreachable_api() -> None:
    port = free_port()  # nothing listens here
    riders = RiderSimulator(
        RoadGraph.load(), f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", rides_per_min=600.0, seed=1
    )
    stop = asyncio.Event()
    task = asyncio.create_task(riders.run(stop))
    deadline = time.monotonic() + 20
    while riders.stats.failed < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await task  # no exception escaped
    assert riders.stats.failed >= 2 and riders.stats.accepted == 0
    assert riders._backoff_s >= 2.0  # exponential backoff after repeated refusals
