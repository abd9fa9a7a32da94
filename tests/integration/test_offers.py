"""Driver offers on the real broker and Postgres: one driver at a time, declines and timeouts move
the offer on, N tries end the ride expired, late and duplicate answers change nothing. The test
plays the drivers: offer-capable pings, then answers on the ride event topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, LatLon, RideOfferAnswered, RideRequested, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import wait_until
from ridehail.matching.main import MatchingService
from ridehail.matching.settings import MatchingSettings

pytestmark = pytest.mark.integration

PICKUP = LatLon(57.7000, 11.9700)
DROPOFF = LatLon(57.7100, 11.9900)
# Three offer-capable drivers, nearest first (about 110 m, 330 m and 550 m north of the pickup).
DRIVERS = {"off-d1": 57.7010, "off-d2": 57.7030, "off-d3": 57.7050}


@pytest.fixture
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


async def start_matching(bootstrap: str, database_url: str, **overrides: Any) -> tuple[MatchingService, Any]:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "database_url": database_url,
        "matching_port": free_port(),
        "matching_batch_window_ms": 200,
        "matching_request_timeout_s": 120,
        "matching_eta_model": "straight_line",
        "matching_offer_timeout_s": 1.5,
        "matching_offer_max_tries": 3,
        "driver_presence_ttl_s": 600,  # the test drivers ping once; presence has its own tests
    }
    values.update(overrides)
    service = MatchingService(MatchingSettings(**values))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    assert await wait_until(lambda: service.started, 30)

    async def shutdown() -> None:
        stop.set()
        await asyncio.wait_for(task, 30)

    return service, shutdown


@pytest.fixture
async def matching(own_broker: str, fresh_database_url: str) -> AsyncIterator[MatchingService]:
    service, shutdown = await start_matching(own_broker, fresh_database_url)
    yield service
    await shutdown()


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


@pytest.fixture
def producer(own_broker: str) -> Iterator[EventProducer]:
    p = EventProducer(own_broker, "test-offers")
    yield p
    p.close()


def offer_capable_pings(producer: EventProducer, drivers: dict[str, float], seq: int = 1) -> None:
    for driver_id, lat in drivers.items():
        ping = DriverLocation(driver_id=driver_id, seq=seq, lat=lat, lon=PICKUP.lon, offers=True)
        producer.produce(DRIVER_LOCATION.name, encode(ping), driver_id)
    producer.flush()


def request(producer: EventProducer, ride_id: str, rider_id: str = "rider-o") -> None:
    event = RideRequested(ride_id=ride_id, rider_id=rider_id, pickup=PICKUP, dropoff=DROPOFF)
    producer.produce(RIDE_REQUEST.name, encode(event), ride_id)
    producer.flush()


def answer(
    producer: EventProducer, ride_id: str, driver_id: str, offer_id: str, accepted: bool, event_id: str | None = None
) -> RideOfferAnswered:
    extra = {"event_id": event_id} if event_id else {}
    event = RideOfferAnswered(
        ride_id=ride_id,
        driver_id=driver_id,
        offer_id=offer_id,
        accepted=accepted,
        reason="" if accepted else "driver declined",
        **extra,
    )
    producer.produce(RIDE_EVENT.name, encode(event), ride_id)
    producer.flush()
    return event


async def offers_known(db: asyncpg.Connection, driver_ids: Any) -> bool:
    """Matching stored these drivers' pings, which say they answer offers."""
    ids = list(driver_ids)
    n = await db.fetchval("SELECT count(*) FROM drivers WHERE driver_id = ANY($1) AND accepts_offers", ids)
    return bool(n == len(ids))


async def wait_offer(db: asyncpg.Connection, ride_id: str, driver_id: str, timeout_s: float = 30) -> str:
    """Wait until the ride is offered to ``driver_id``; returns the offer id."""

    async def offered() -> bool:
        row = await db.fetchrow("SELECT status, driver_id FROM rides WHERE ride_id = $1", ride_id)
        return row is not None and (row["status"], row["driver_id"]) == ("offered", driver_id)

    assert await wait_until(offered, timeout_s), f"{ride_id} never offered to {driver_id}"
    return str(await db.fetchval("SELECT offer_id FROM rides WHERE ride_id = $1", ride_id))


async def history(db: asyncpg.Connection, ride_id: str) -> list[str]:
    rows = await db.fetch("SELECT type FROM ride_events WHERE ride_id = $1 ORDER BY id", ride_id)
    return [r["type"] for r in rows]


async def driver_state(db: asyncpg.Connection, driver_id: str) -> tuple[str, str | None]:
    row = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = $1", driver_id)
    return row["status"], row["current_ride_id"]


async def test_offer_cascade_decline_then_timeout_then_accept(
    matching: MatchingService, producer: EventProducer, db: asyncpg.Connection
) -> None:
    offer_capable_pings(producer, DRIVERS)
    assert await wait_until(lambda: offers_known(db, DRIVERS), 30)
    request(producer, "ride-cascade")

    first = await wait_offer(db, "ride-cascade", "off-d1")  # the nearest driver first, held not assigned
    assert await driver_state(db, "off-d1") == ("offered", "ride-cascade")
    answer(producer, "ride-cascade", "off-d1", first, accepted=False)

    second = await wait_offer(db, "ride-cascade", "off-d2")  # declined: the next candidate
    assert await driver_state(db, "off-d1") == ("available", None)
    # off-d2 never answers: after the offer timeout the offer moves on to off-d3
    third = await wait_offer(db, "ride-cascade", "off-d3")
    assert await driver_state(db, "off-d2") == ("available", None)
    assert await db.fetchval("SELECT offer_attempts FROM rides WHERE ride_id = 'ride-cascade'") == 3
    accept = answer(producer, "ride-cascade", "off-d3", third, accepted=True)

    async def assigned() -> bool:
        return bool(await db.fetchval("SELECT status = 'assigned' FROM rides WHERE ride_id = 'ride-cascade'"))

    assert await wait_until(assigned, 30)
    assert await driver_state(db, "off-d3") == ("to_pickup", "ride-cascade")
    assert await history(db, "ride-cascade") == [
        "ride.requested",
        "ride.offered",
        "ride.offer_answered",
        "ride.offered",
        "ride.offer_timed_out",
        "ride.offered",
        "ride.offer_answered",
        "ride.assigned",
    ]

    # A late accept from off-d2 (its offer timed out) and a redelivered accept from off-d3 (same
    # event id): both ignored, the outcome stays, nobody is held.
    answer(producer, "ride-cascade", "off-d2", second, accepted=True)
    answer(producer, "ride-cascade", "off-d3", third, accepted=True, event_id=accept.event_id)
    assert await wait_until(lambda: matching.engine.offer_stats.ignored_total >= 2, 30)
    ride = await db.fetchrow("SELECT status, driver_id FROM rides WHERE ride_id = 'ride-cascade'")
    assert (ride["status"], ride["driver_id"]) == ("assigned", "off-d3")
    assert await driver_state(db, "off-d2") == ("available", None)
    assert (await history(db, "ride-cascade")).count("ride.assigned") == 1

    offers = matching.stats()["offers"]
    assert (offers["sent"], offers["accepted"], offers["declined"], offers["timed_out"]) == (3, 1, 1, 1)
    assert offers["acceptance_rate"] == pytest.approx(1 / 3, abs=0.001)
    assert offers["answer_p50_ms"] is not None and offers["answer_p50_ms"] >= 0


@pytest.mark.usefixtures("matching")
async def test_after_max_tries_the_ride_expires_with_a_reason(producer: EventProducer, db: asyncpg.Connection) -> None:
    offer_capable_pings(producer, DRIVERS)
    assert await wait_until(lambda: offers_known(db, DRIVERS), 30)
    request(producer, "ride-nobody")
    for driver_id in DRIVERS:  # every driver declines (max tries 3)
        offer_id = await wait_offer(db, "ride-nobody", driver_id)
        answer(producer, "ride-nobody", driver_id, offer_id, accepted=False)

    async def expired() -> bool:
        return bool(await db.fetchval("SELECT status = 'expired' FROM rides WHERE ride_id = 'ride-nobody'"))

    assert await wait_until(expired, 30)
    ride = await db.fetchrow("SELECT reason, driver_id, offer_attempts FROM rides WHERE ride_id = 'ride-nobody'")
    assert ride["reason"] == "no driver accepted the ride after 3 offers"
    assert ride["driver_id"] is None and ride["offer_attempts"] == 3
    for driver_id in DRIVERS:
        assert await driver_state(db, driver_id) == ("available", None)
    assert (await history(db, "ride-nobody"))[-1] == "ride.expired"


async def test_drivers_without_offer_support_are_assigned_directly(
    matching: MatchingService, producer: EventProducer, db: asyncpg.Connection
) -> None:
    ping = DriverLocation(driver_id="plain-d1", seq=1, lat=57.7010, lon=PICKUP.lon)  # offers=False
    producer.produce(DRIVER_LOCATION.name, encode(ping), "plain-d1")
    producer.flush()
    assert await wait_until(lambda: matching.engine.is_candidate("plain-d1"), 30)
    request(producer, "ride-direct")

    async def assigned() -> bool:
        return bool(await db.fetchval("SELECT status = 'assigned' FROM rides WHERE ride_id = 'ride-direct'"))

    assert await wait_until(assigned, 30)
    assert await history(db, "ride-direct") == ["ride.requested", "ride.assigned"]


async def test_batched_mode_proposes_offers(own_broker: str, fresh_database_url: str, db: asyncpg.Connection) -> None:
    service, shutdown = await start_matching(own_broker, fresh_database_url, matching_mode="batched")
    producer = EventProducer(own_broker, "test-offers-batched")
    try:
        offer_capable_pings(producer, {"bat-d1": 57.7010, "bat-d2": 57.7030})
        assert await wait_until(lambda: offers_known(db, ["bat-d1", "bat-d2"]), 30)
        request(producer, "ride-b1")
        request(producer, "ride-b2")
        offers: dict[str, str] = {}

        async def both_offered() -> bool:
            rows = await db.fetch("SELECT ride_id, driver_id, status FROM rides WHERE ride_id LIKE 'ride-b%'")
            offers.update({r["ride_id"]: r["driver_id"] for r in rows if r["status"] == "offered"})
            return len(offers) == 2

        assert await wait_until(both_offered, 30)
        assert sorted(offers.values()) == ["bat-d1", "bat-d2"]  # one driver per ride
        for ride_id, driver_id in offers.items():
            offer_id = await db.fetchval("SELECT offer_id FROM rides WHERE ride_id = $1", ride_id)
            answer(producer, ride_id, driver_id, offer_id, accepted=True)

        async def both_assigned() -> bool:
            n = await db.fetchval("SELECT count(*) FROM rides WHERE ride_id LIKE 'ride-b%' AND status = 'assigned'")
            return bool(n == 2)

        assert await wait_until(both_assigned, 30)
    finally:
        producer.close()
        await shutdown()


async def test_two_instances_offering_never_double_book(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    """Two matching instances in one group, 10 offer-capable drivers, 20 riders: every driver is
    held by at most one ride at a time, and exactly 10 rides end assigned, one per driver."""
    first, stop_first = await start_matching(own_broker, fresh_database_url, matching_group_id="pair")
    second, stop_second = await start_matching(own_broker, fresh_database_url, matching_group_id="pair")
    producer = EventProducer(own_broker, "test-offers-pair")
    answered: set[str] = set()
    overlaps: list[Any] = []

    bot_db = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))  # its own connection: it runs alongside

    async def drivers_accept_everything() -> None:
        while True:
            overlaps.extend(
                await bot_db.fetch(
                    "SELECT driver_id FROM rides WHERE status IN ('offered', 'assigned') AND driver_id IS NOT NULL "
                    "GROUP BY driver_id HAVING count(*) > 1"
                )
            )
            for r in await bot_db.fetch("SELECT ride_id, driver_id, offer_id FROM rides WHERE status = 'offered'"):
                if r["offer_id"] not in answered:
                    answered.add(r["offer_id"])
                    answer(producer, r["ride_id"], r["driver_id"], r["offer_id"], accepted=True)
            await asyncio.sleep(0.05)

    bot = asyncio.create_task(drivers_accept_everything())
    try:
        pair = {f"pair-d{i:02d}": 57.7002 + 0.0002 * i for i in range(10)}
        offer_capable_pings(producer, pair)
        assert await wait_until(lambda: offers_known(db, pair), 30)
        for i in range(20):
            request(producer, f"ride-pair-{i:02d}", rider_id=f"rider-{i}")

        async def all_drivers_busy() -> bool:
            n = await db.fetchval("SELECT count(*) FROM rides WHERE ride_id LIKE 'ride-pair-%' AND status = 'assigned'")
            return bool(n == 10)

        assert await wait_until(all_drivers_busy, 60)
        await asyncio.sleep(1.0)  # let any stray offer surface
        rows = await db.fetch("SELECT ride_id, driver_id, status FROM rides WHERE ride_id LIKE 'ride-pair-%'")
        assigned = [r for r in rows if r["status"] == "assigned"]
        assert len(assigned) == 10 and len({r["driver_id"] for r in assigned}) == 10
        assert {r["status"] for r in rows} <= {"assigned", "requested"}
        for r in assigned:
            assert await driver_state(db, r["driver_id"]) == ("to_pickup", r["ride_id"])
        assert overlaps == []  # never two rides holding one driver, at any sampled moment
    finally:
        bot.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bot
        await bot_db.close()
        producer.close()
        await stop_first()
        await stop_second()
