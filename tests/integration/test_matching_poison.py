"""Matching's ride handler against real Postgres, one event at a time: an event whose application
raises (whatever the exception) is rejected with the reason and the rest of the batch is applied;
a database that is down fails the batch (to be retried) and rejects nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from confluent_kafka import Message

from ridehail.common.batch_consumer import Decoded
from ridehail.common.db import make_engine, make_sessionmaker, transaction
from ridehail.common.ports import free_port
from ridehail.domain.events import Event, LatLon, RideAssigned, RideCompleted, RideExpired, encode
from ridehail.domain.topics import REPLAY_HEADER, RIDE_EVENT
from ridehail.matching.engine import MatchingEngine
from ridehail.matching.eta import StraightLineEta
from ridehail.matching.settings import MatchingSettings
from ridehail.stores import rides

pytestmark = pytest.mark.integration

PICKUP, DROPOFF = LatLon(57.70, 11.97), LatLon(57.71, 11.99)


def decoded(event: Event, offset: int = 0, headers: list[tuple[str, bytes]] | None = None) -> Decoded:
    msg = Message(topic=RIDE_EVENT.name, partition=0, offset=offset, value=encode(event), headers=headers)
    return Decoded(event, msg)


def make_matching(url: str) -> MatchingEngine:
    settings = MatchingSettings(database_url=url, matching_eta_model="straight_line")
    return MatchingEngine(settings, make_sessionmaker(make_engine(url)), StraightLineEta())


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[MatchingEngine]:
    eng = make_matching(database_url)
    yield eng
    await eng._factory.kw["bind"].dispose()


async def ride_in_progress(engine: MatchingEngine, pg: asyncpg.Connection) -> tuple[str, str]:
    ride_id, driver_id = uuid.uuid4().hex, f"drv-{uuid.uuid4().hex[:8]}"
    async with transaction(engine._factory) as session:
        await rides.insert_ride(session, ride_id, f"rider-{ride_id[:6]}", PICKUP, DROPOFF)
    await pg.execute("UPDATE rides SET status = 'in_progress', driver_id = $2 WHERE ride_id = $1", ride_id, driver_id)
    return ride_id, driver_id


async def test_an_event_that_raises_while_applied_is_rejected_and_the_batch_goes_on(
    engine: MatchingEngine, pg: asyncpg.Connection
) -> None:
    poisoned, d1 = await ride_in_progress(engine, pg)
    fine, d2 = await ride_in_progress(engine, pg)
    # Built in Python, these skip the decoder's bounds: what a value that slipped past a schema does.
    absurd = RideCompleted(ride_id=poisoned, driver_id=d1, fare=1e300, distance_m=1e300, duration_s=1e300)
    good = RideCompleted(ride_id=fine, driver_id=d2, fare=12.5)
    rejected = await asyncio.wait_for(engine.handle_rides([decoded(absurd, 0), decoded(good, 1)]), 30)
    assert [r.message.offset() for r in rejected] == [0]
    assert "could not be applied" in rejected[0].reason
    assert await pg.fetchval("SELECT status FROM rides WHERE ride_id = $1", poisoned) == "in_progress"
    assert await pg.fetchval("SELECT count(*) FROM ride_events WHERE ride_id = $1", poisoned) == 0
    assert await pg.fetchval("SELECT status FROM rides WHERE ride_id = $1", fine) == "completed"
    assert str(await pg.fetchval("SELECT fare FROM rides WHERE ride_id = $1", fine)) == "12.50"


async def test_a_database_that_is_down_fails_the_batch_and_rejects_nothing() -> None:
    down = make_matching(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres")
    good = RideCompleted(ride_id="r", driver_id="d", fare=1.0)
    with pytest.raises(OSError):  # raised, not returned as a rejection: the batch is retried
        await down.handle_rides([decoded(good)])
    await down._factory.kw["bind"].dispose()


async def test_recorded_decisions_apply_only_to_rides_a_replay_created(
    engine: MatchingEngine, pg: asyncpg.Connection
) -> None:
    """The replay header says "the recording decided this": honoured for a ride a replay created,
    refused (dead-lettered with the reason) for a live ride, whose decisions are matching's own."""
    live = uuid.uuid4().hex
    async with transaction(engine._factory) as session:
        await rides.insert_ride(session, live, "rider-live", PICKUP, DROPOFF)
    header = [(REPLAY_HEADER, b"1")]
    hijack = RideAssigned(ride_id=live, rider_id="rider-live", driver_id="drv-hijack", pickup=PICKUP, dropoff=DROPOFF)
    expire = RideExpired(ride_id=live, rider_id="rider-live", reason="recorded")
    replayed_ride = uuid.uuid4().hex
    recorded = RideAssigned(
        ride_id=replayed_ride, rider_id="rider-rec", driver_id="drv-rec", pickup=PICKUP, dropoff=DROPOFF
    )
    batch = [decoded(hijack, 0, header), decoded(expire, 1, header), decoded(recorded, 2, header)]
    rejected = await engine.handle_rides(batch)
    assert sorted(r.message.offset() for r in rejected) == [0, 1]
    assert all("live ride" in r.reason for r in rejected)
    row = await pg.fetchrow("SELECT status, driver_id FROM rides WHERE ride_id = $1", live)
    assert (row["status"], row["driver_id"]) == ("requested", None)
    assert await pg.fetchval("SELECT status FROM rides WHERE ride_id = $1", replayed_ride) == "assigned"
