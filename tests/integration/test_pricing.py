"""Pricing on the real broker and Postgres: pings and requests in, a SurgeChanged event only when a
cell's multiplier changes, the current value kept in Postgres; and the fare of a completed ride
stored by matching (the simulator's, or computed from the ride's locked multiplier)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import asyncpg
import h3
import pytest

from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.common.tariff import current_tariff
from ridehail.domain.events import (
    DriverLocation,
    LatLon,
    RideArrived,
    RideAssigned,
    RideCompleted,
    RidePickedUp,
    RideRequested,
    SurgeChanged,
    encode,
    now_ms,
)
from ridehail.domain.fares import compute_fare
from ridehail.domain.topics import DRIVER_LOCATION, PRICING_SURGE, RIDE_EVENT, RIDE_REQUEST
from ridehail.gateway.ride_requests import create_ride
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import running_matching, wait_until
from ridehail.matching.main import MatchingService
from ridehail.matching.settings import MatchingSettings
from ridehail.pricing.service import PricingService
from ridehail.pricing.settings import PricingSettings

pytestmark = pytest.mark.integration

HOT = LatLon(57.7000, 11.9700)
DROPOFF = LatLon(57.7100, 11.9900)
HOT_CELL = h3.latlng_to_cell(HOT.lat, HOT.lon, 8)


@pytest.fixture
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


@pytest.fixture
async def pricing(own_broker: str, fresh_database_url: str) -> AsyncIterator[PricingService]:
    settings = PricingSettings(
        kafka_bootstrap=own_broker,
        database_url=fresh_database_url,
        pricing_port=free_port(),
        pricing_tick_ms=60_000,  # the test drives the ticks itself
    )
    service = PricingService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    assert await wait_until(lambda: service.started, 30)
    yield service
    stop.set()
    await asyncio.wait_for(task, 30)


def _request(i: int) -> bytes:
    return encode(RideRequested(ride_id=f"hot-{i}", rider_id="u", pickup=HOT, dropoff=DROPOFF))


async def test_surge_events_are_emitted_only_when_a_cell_changes(
    pricing: PricingService, own_broker: str, db: asyncpg.Connection
) -> None:
    surges = EventCollector(own_broker, [PRICING_SURGE.name]).start()
    producer = EventProducer(own_broker, "test-pricing")
    for i in range(2):  # two available drivers in the hot cell, one elsewhere, one busy in the hot cell
        ping = DriverLocation(driver_id=f"hot-d{i}", seq=1, lat=HOT.lat + i * 1e-5, lon=HOT.lon)
        producer.produce(DRIVER_LOCATION.name, encode(ping), f"hot-d{i}")
    far = DriverLocation(driver_id="far-d", seq=1, lat=57.73, lon=12.03)
    busy = DriverLocation(driver_id="busy-d", seq=1, lat=HOT.lat, lon=HOT.lon, status="on_trip")
    producer.produce(DRIVER_LOCATION.name, encode(far), "far-d")
    producer.produce(DRIVER_LOCATION.name, encode(busy), "busy-d")
    for i in range(12):
        producer.produce(RIDE_REQUEST.name, _request(i), f"hot-{i}")
    producer.produce(DRIVER_LOCATION.name, b"{not json", "poison")  # dead-lettered, the rest applied
    producer.flush()
    assert await wait_until(lambda: pricing.handler.applied >= 16, 30)

    now = now_ms()
    emitted: list[float] = []
    for tick in range(30):
        changes = await pricing.tick(now + tick * 1000)
        emitted += [c.multiplier for c in changes if c.cell == HOT_CELL]
        assert all(c.multiplier != c.previous for c in changes)
    assert pricing.book.counts(now)[HOT_CELL] == (12, 2)
    assert emitted and emitted == sorted(emitted) and len(set(emitted)) == len(emitted)
    assert await pricing.tick(now + 31_000) == []  # steady: nothing new to say

    async def all_on_topic() -> bool:
        return len([e for e in surges.events(SurgeChanged) if e.cell == HOT_CELL]) >= len(emitted)

    assert await wait_until(all_on_topic, 30)
    await asyncio.sleep(0.5)
    on_topic = [e for e in surges.events(SurgeChanged) if e.cell == HOT_CELL]
    assert [e.multiplier for e in on_topic] == emitted  # exactly the changes, nothing repeated
    assert on_topic[-1].demand == 12 and on_topic[-1].supply == 2 and on_topic[-1].resolution == 8
    stored = await db.fetchrow("SELECT multiplier, demand, supply FROM surge_cells WHERE cell = $1", HOT_CELL)
    assert (stored["multiplier"], stored["demand"], stored["supply"]) == (emitted[-1], 12, 2)
    far_cell = h3.latlng_to_cell(57.73, 12.03, 8)
    assert await db.fetchval("SELECT count(*) FROM surge_cells WHERE cell = $1", far_cell) == 0
    surges.stop()
    producer.close()

    assert await wait_until(lambda: pricing.consumer.stats.dead_lettered >= 1, 10)


async def test_a_restarted_pricing_service_does_not_announce_known_values_again(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO surge_cells (cell, multiplier, demand, supply, ts) VALUES ($1, 1.7, 10, 1, $2)", HOT_CELL, 1
    )
    settings = PricingSettings(kafka_bootstrap=own_broker, database_url=fresh_database_url, pricing_port=free_port())
    service = PricingService(settings)
    assert await service.load_published() == 1
    assert service.book.multiplier(HOT_CELL) == 1.7
    service.producer.close(1)
    assert service.engine_db is not None
    await service.engine_db.dispose()


@pytest.fixture
async def matching(own_broker: str, fresh_database_url: str) -> AsyncIterator[MatchingService]:
    settings = MatchingSettings(
        kafka_bootstrap=own_broker,
        database_url=fresh_database_url,
        matching_port=free_port(),
        matching_eta_model="straight_line",
        matching_offers=False,
        driver_presence_ttl_s=600,  # the test driver pings once
    )
    async with running_matching(settings) as service:
        yield service


async def _drive_to_completion(
    matching: MatchingService, own_broker: str, database_url: str, driver: str, completed: RideCompleted | None
) -> tuple[str, RideAssigned]:
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    producer = EventProducer(own_broker, "test-fare")
    ping = DriverLocation(driver_id=driver, seq=1, lat=HOT.lat + 1e-4, lon=HOT.lon)
    producer.produce(DRIVER_LOCATION.name, encode(ping), driver)
    producer.flush()
    assert await wait_until(lambda: matching.engine.is_candidate(driver), 30)
    engine = make_engine(database_url)
    ride_id = await create_ride(make_sessionmaker(engine), "rider-f", HOT, DROPOFF, surge_multiplier=1.6)
    await engine.dispose()
    assert await wait_until(lambda: any(e.ride_id == ride_id for e in collector.events(RideAssigned)), 30)
    assigned = next(e for e in collector.events(RideAssigned) if e.ride_id == ride_id)
    done = completed or RideCompleted(ride_id=ride_id, rider_id="rider-f", driver_id=driver)
    done = RideCompleted(
        ride_id=ride_id,
        rider_id="rider-f",
        driver_id=driver,
        distance_m=done.distance_m,
        duration_s=done.duration_s,
        fare=done.fare,
        surge_multiplier=done.surge_multiplier,
    )
    for ev in (
        RideArrived(ride_id=ride_id, rider_id="rider-f", driver_id=driver),
        RidePickedUp(ride_id=ride_id, rider_id="rider-f", driver_id=driver),
        done,
    ):
        producer.produce(RIDE_EVENT.name, encode(ev), ride_id)
        producer.flush()
        await asyncio.sleep(0.05)
    producer.close()
    collector.stop()
    return ride_id, assigned


async def test_fare_from_the_completion_is_stored_on_the_ride(
    matching: MatchingService, own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    fare = compute_fare(current_tariff(), 4200.0, 600.0, 1.6)
    sim = RideCompleted(
        ride_id="x", driver_id="x", distance_m=4200.0, duration_s=600.0, fare=float(fare.total), surge_multiplier=1.6
    )
    ride_id, assigned = await _drive_to_completion(matching, own_broker, fresh_database_url, "fare-d1", sim)
    assert assigned.surge_multiplier == 1.6  # the simulator prices the trip with what the ride locked
    assert await wait_until(lambda: db.fetchval("SELECT fare IS NOT NULL FROM rides WHERE ride_id = $1", ride_id), 30)
    row = await db.fetchrow("SELECT status, fare, fare_breakdown FROM rides WHERE ride_id = $1", ride_id)
    assert row["status"] == "completed" and row["fare"] == fare.total
    assert '"computed_by": "simulator"' in row["fare_breakdown"]


async def test_fare_is_computed_from_the_locked_multiplier_when_the_completion_has_none(
    matching: MatchingService, own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    plain = RideCompleted(ride_id="x", driver_id="x", distance_m=3000.0, duration_s=420.0)
    ride_id, _ = await _drive_to_completion(matching, own_broker, fresh_database_url, "fare-d2", plain)
    assert await wait_until(lambda: db.fetchval("SELECT fare IS NOT NULL FROM rides WHERE ride_id = $1", ride_id), 30)
    expected = compute_fare(current_tariff(), 3000.0, 420.0, 1.6).total
    assert await db.fetchval("SELECT fare FROM rides WHERE ride_id = $1", ride_id) == expected
    assert expected > compute_fare(current_tariff(), 3000.0, 420.0, 1.0).total > Decimal(0)
