"""Cancellations on the real broker and Postgres: a rider's cancel racing the driver's accept ends
with exactly one outcome per ride (recorded in its history) and no driver left held; a driver's
cancel before pickup frees the driver and ends the ride with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from ridehail.common.auth_tokens import Principal
from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, LatLon, RideCancelled, RideOfferAnswered, RideRequested, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.gateway.ride_requests import cancel_as
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import running_matching, wait_until
from ridehail.matching.main import MatchingService
from ridehail.matching.settings import MatchingSettings

pytestmark = pytest.mark.integration

RACES = 12


@pytest.fixture
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
async def matching(own_broker: str, fresh_database_url: str) -> AsyncIterator[MatchingService]:
    settings = MatchingSettings(
        kafka_bootstrap=own_broker,
        database_url=fresh_database_url,
        matching_port=free_port(),
        matching_batch_window_ms=200,
        matching_eta_model="straight_line",
        matching_offer_timeout_s=60,  # the races decide, never the timeout
        driver_presence_ttl_s=600,  # and never presence: the test drivers ping once
    )
    async with running_matching(settings) as service:
        yield service


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


def principal(rider_id: str) -> Principal:
    return Principal(sub=rider_id, role="rider", jti="t", exp=0)


async def offered_rides(
    matching: MatchingService, producer: EventProducer, db: asyncpg.Connection, n: int, offers: bool = True
) -> dict[str, tuple[str, str | None]]:
    """``n`` drivers spread far apart, one ride next to each: ride_id -> (driver, offer id)."""
    rides: dict[str, str] = {}
    for i in range(n):
        driver_id, ride_id = f"race-d{i:02d}", f"race-r{i:02d}"
        lat, lon = 57.66 + 0.006 * i, 11.92 + 0.01 * (i % 3)  # > 600 m apart: one candidate per ride
        ping = DriverLocation(driver_id=driver_id, seq=1, lat=lat, lon=lon, offers=offers)
        producer.produce(DRIVER_LOCATION.name, encode(ping), driver_id)
        rides[ride_id] = driver_id
    producer.flush()

    async def all_candidates() -> bool:
        return all([await matching.engine.is_candidate(d) for d in rides.values()])

    assert await wait_until(all_candidates, 30)
    for i, ride_id in enumerate(rides):
        lat, lon = 57.66 + 0.006 * i + 0.0005, 11.92 + 0.01 * (i % 3)
        event = RideRequested(
            ride_id=ride_id, rider_id=f"rider-{ride_id}", pickup=LatLon(lat, lon), dropoff=LatLon(57.72, 11.99)
        )
        producer.produce(RIDE_REQUEST.name, encode(event), ride_id)
    producer.flush()
    target = "offered" if offers else "assigned"

    async def all_there() -> bool:
        n_ok = await db.fetchval("SELECT count(*) FROM rides WHERE ride_id LIKE 'race-r%' AND status = $1", target)
        return bool(n_ok == n)

    assert await wait_until(all_there, 60)
    rows = await db.fetch("SELECT ride_id, driver_id, offer_id FROM rides WHERE ride_id LIKE 'race-r%'")
    for r in rows:
        assert r["driver_id"] == rides[r["ride_id"]]
    return {r["ride_id"]: (r["driver_id"], r["offer_id"]) for r in rows}


async def test_rider_cancel_racing_driver_accept_ends_with_exactly_one_outcome(
    matching: MatchingService, own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    producer = EventProducer(own_broker, "test-races")
    engine = make_engine(fresh_database_url)
    factory = make_sessionmaker(engine)
    try:
        rides = await offered_rides(matching, producer, db, RACES)

        async def accept(ride_id: str, driver_id: str, offer_id: str, delay_s: float) -> None:
            await asyncio.sleep(delay_s)
            event = RideOfferAnswered(ride_id=ride_id, driver_id=driver_id, offer_id=offer_id, accepted=True)
            producer.produce(RIDE_EVENT.name, encode(event), ride_id)
            await asyncio.to_thread(producer.flush)

        async def cancel(ride_id: str, delay_s: float) -> str:
            await asyncio.sleep(delay_s)
            result, _ = await cancel_as(factory, ride_id, principal(f"rider-{ride_id}"))
            return result.status

        # Every ride: the driver's accept and the rider's cancel, launched together with one of them
        # held back by an offset from 1 s (the accept waits) to 1.5 s (the cancel waits): across the
        # rides both orders happen, and the close calls in between race for real.
        jobs = []
        for i, (ride_id, (driver_id, offer_id)) in enumerate(rides.items()):
            assert offer_id is not None
            offset = -1.0 + 2.5 * i / max(RACES - 1, 1)
            jobs += [
                accept(ride_id, driver_id, offer_id, max(-offset, 0.0)),
                cancel(ride_id, max(offset, 0.0)),
            ]
        outcomes = await asyncio.gather(*jobs)
        assert [o for o in outcomes if o is not None] == ["cancelled"] * RACES

        async def answers_applied() -> bool:
            n = await db.fetchval("SELECT count(*) FROM ride_events WHERE type = 'ride.offer_answered'")
            return bool(n == RACES)

        assert await wait_until(answers_applied, 60)
        await asyncio.sleep(0.5)  # the last batch's releases commit with its answers
        winners = {"accept": 0, "cancel": 0}
        for ride_id, (driver_id, _) in rides.items():
            ride = await db.fetchrow("SELECT status, cancelled_by FROM rides WHERE ride_id = $1", ride_id)
            assert (ride["status"], ride["cancelled_by"]) == ("cancelled", "rider")
            types = [
                r["type"]
                for r in await db.fetch("SELECT type FROM ride_events WHERE ride_id = $1 ORDER BY id", ride_id)
            ]
            assert types.count("ride.cancelled") == 1 and types.count("ride.offer_answered") == 1
            # Either the accept won (assigned, then cancelled) or the cancel did (the accept is ignored).
            if "ride.assigned" in types:
                assert types.index("ride.assigned") < types.index("ride.cancelled")
                assert types.count("ride.assigned") == 1
                winners["accept"] += 1
            else:
                assert types.index("ride.cancelled") < types.index("ride.offer_answered")
                winners["cancel"] += 1
            driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = $1", driver_id)
            assert (driver["status"], driver["current_ride_id"]) == ("available", None), driver_id
        # Both outcomes really happened over the runs, each ride ending one way.
        assert winners["accept"] > 0 and winners["cancel"] > 0, winners
        assert winners["accept"] + winners["cancel"] == RACES

        # Every driver is assignable again.
        async def all_candidates() -> bool:
            return all([await matching.engine.is_candidate(d) for d, _ in rides.values()])

        assert await wait_until(all_candidates, 30)
    finally:
        producer.close()
        await engine.dispose()


async def test_driver_cancel_before_pickup_frees_the_driver_and_ends_the_ride_with_the_reason(
    matching: MatchingService, own_broker: str, db: asyncpg.Connection
) -> None:
    producer = EventProducer(own_broker, "test-driver-cancel")
    try:
        rides = await offered_rides(matching, producer, db, 2, offers=False)  # assigned directly
        (ride_id, (driver_id, _)), (other_ride, (other_driver, _)) = rides.items()
        cancel = RideCancelled(
            ride_id=ride_id, by="driver", reason="driver cancelled on the way to the pickup", driver_id=driver_id
        )
        # A driver that is not the ride's driver cannot cancel it (dead-lettered, nothing moves).
        foreign = RideCancelled(ride_id=other_ride, by="driver", reason="not mine", driver_id=driver_id)
        producer.produce(RIDE_EVENT.name, encode(foreign), other_ride)
        producer.produce(RIDE_EVENT.name, encode(cancel), ride_id)
        producer.flush()

        async def cancelled() -> bool:
            return bool(await db.fetchval("SELECT status = 'cancelled' FROM rides WHERE ride_id = $1", ride_id))

        assert await wait_until(cancelled, 30)
        ride = await db.fetchrow("SELECT reason, cancelled_by, cancellation_fee FROM rides WHERE ride_id = $1", ride_id)
        assert ride["reason"] == "driver cancelled on the way to the pickup" and ride["cancelled_by"] == "driver"
        assert ride["cancellation_fee"] is None  # the rider pays nothing for a driver's cancel
        assert await wait_until(lambda: matching.engine.is_candidate(driver_id), 30)
        driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = $1", driver_id)
        assert (driver["status"], driver["current_ride_id"]) == ("available", None)
        other = await db.fetchrow("SELECT status, driver_id FROM rides WHERE ride_id = $1", other_ride)
        assert (other["status"], other["driver_id"]) == ("assigned", other_driver)
        assert matching.rides.stats.dead_lettered >= 1
    finally:
        producer.close()
