"""Matching on the real broker and Postgres: pings -> driver rows, request -> assignment ->
lifecycle, and bad input -> DLQ with a reason while the consumer keeps going."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import (
    DriverLocation,
    LatLon,
    RideArrived,
    RideAssigned,
    RideCancelled,
    RideCompleted,
    RideExpired,
    RidePickedUp,
    RideRequested,
    encode,
)
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.gateway.ride_requests import create_ride
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import running_matching, wait_until
from ridehail.matching.main import MatchingService
from ridehail.matching.settings import MatchingSettings

pytestmark = pytest.mark.integration

PICKUP = LatLon(57.7000, 11.9700)
DROPOFF = LatLon(57.7100, 11.9900)


@pytest.fixture
def own_broker() -> Iterator[str]:
    """A broker per test: a fresh database must not meet the previous test's requests on the topics."""
    with private_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
async def matching(own_broker: str, fresh_database_url: str) -> AsyncIterator[MatchingService]:
    settings = MatchingSettings(
        kafka_bootstrap=own_broker,
        database_url=fresh_database_url,
        matching_port=free_port(),
        matching_batch_window_ms=200,
        matching_request_timeout_s=30,
        matching_eta_model="straight_line",
        driver_presence_ttl_s=600,  # each driver pings once here; presence has its own tests
    )
    async with running_matching(settings) as service:
        yield service


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


def committed_offset(bootstrap: str, group_id: str, tp: TopicPartition) -> int:
    """The group's committed offset on one partition (-1001 when nothing is committed yet)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False})
    try:
        [result] = reader.committed([TopicPartition(tp.topic, tp.partition)], timeout=10)
        return int(result.offset)
    finally:
        reader.close()


def ping(driver: str, seq: int, lat: float = 57.7001, lon: float = 11.9701, status: str = "available") -> bytes:
    return encode(DriverLocation(driver_id=driver, seq=seq, lat=lat, lon=lon, status=status))


async def test_pings_become_driver_rows_and_stale_seq_is_ignored(
    matching: MatchingService, own_broker: str, db: asyncpg.Connection
) -> None:
    producer = EventProducer(own_broker, "test-pings")
    for seq in range(1, 6):
        producer.produce(DRIVER_LOCATION.name, ping("pipe-d1", seq, lat=57.70 + seq / 1000), "pipe-d1")
    producer.flush()
    assert await wait_until(lambda: db.fetchval("SELECT last_seq = 5 FROM drivers WHERE driver_id = 'pipe-d1'"), 30)
    # An older ping arriving later (another batch) must not move the driver back.
    delivered: list[Message] = []
    producer.produce(
        DRIVER_LOCATION.name,
        ping("pipe-d1", 3, lat=57.6999),
        "pipe-d1",
        on_delivery=lambda err, msg: delivered.append(msg) if err is None else None,
    )
    producer.flush()
    producer.close()
    assert len(delivered) == 1
    stale = TopicPartition(delivered[0].topic(), delivered[0].partition(), delivered[0].offset())

    # Matching stores a partition's offset only after the batch holding it is committed to
    # Postgres: once its committed offset is past the stale ping, that ping has been applied.
    async def stale_ping_consumed() -> bool:
        committed = await asyncio.to_thread(
            committed_offset, own_broker, f"{matching.settings.matching_group_id}-locations", stale
        )
        return committed > stale.offset

    assert await wait_until(stale_ping_consumed, 30), "matching never consumed the stale ping"
    row = await db.fetchrow("SELECT last_seq, lat, status FROM drivers WHERE driver_id = 'pipe-d1'")
    assert row["last_seq"] == 5
    assert row["lat"] == pytest.approx(57.705)
    assert row["status"] == "available"
    assert await matching.engine.is_candidate("pipe-d1")


async def test_request_is_assigned_then_lifecycle_completes(
    matching: MatchingService, own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    producer = EventProducer(own_broker, "test-life")
    producer.produce(DRIVER_LOCATION.name, ping("life-d1", 1, 57.7010, 11.9710), "life-d1")
    producer.produce(DRIVER_LOCATION.name, ping("life-d2", 1, 57.7300, 12.0300), "life-d2")  # farther away
    producer.flush()
    assert await wait_until(lambda: db.fetchval("SELECT count(*) = 2 FROM drivers"), 30)

    engine = make_engine(fresh_database_url)
    ride_id = await create_ride(make_sessionmaker(engine), "rider-1", PICKUP, DROPOFF)
    await engine.dispose()

    async def assigned() -> bool:
        return any(e.ride_id == ride_id for e in collector.events(RideAssigned))

    assert await wait_until(assigned, 30), "no RideAssigned event"
    event = next(e for e in collector.events(RideAssigned) if e.ride_id == ride_id)
    assert event.driver_id == "life-d1"  # the nearer driver
    assert event.rider_id == "rider-1" and event.pickup == PICKUP and event.dropoff == DROPOFF
    assert event.eta_s > 0
    ride = await db.fetchrow("SELECT status, driver_id, assigned_at FROM rides WHERE ride_id = $1", ride_id)
    assert (ride["status"], ride["driver_id"]) == ("assigned", "life-d1") and ride["assigned_at"] is not None
    driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = 'life-d1'")
    assert (driver["status"], driver["current_ride_id"]) == ("to_pickup", ride_id)
    assert not await matching.engine.is_candidate("life-d1")

    for cls in (RideArrived, RidePickedUp, RideCompleted):
        ev = cls(ride_id=ride_id, rider_id="rider-1", driver_id="life-d1")
        producer.produce(RIDE_EVENT.name, encode(ev), ride_id)
        producer.flush()
        await asyncio.sleep(0.05)
    producer.close()
    assert await wait_until(
        lambda: db.fetchval("SELECT status = 'completed' FROM rides WHERE ride_id = $1", ride_id), 30
    )
    history = [
        r["type"] for r in await db.fetch("SELECT type FROM ride_events WHERE ride_id = $1 ORDER BY id", ride_id)
    ]
    assert history == ["ride.requested", "ride.assigned", "ride.arrived", "ride.picked_up", "ride.completed"]
    times = await db.fetchrow(
        "SELECT requested_at, assigned_at, arrived_at, picked_up_at, completed_at FROM rides WHERE ride_id = $1",
        ride_id,
    )
    assert all(t is not None for t in times.values())
    assert list(times.values()) == sorted(times.values())
    driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = 'life-d1'")
    assert (driver["status"], driver["current_ride_id"]) == ("available", None)
    assert await wait_until(lambda: matching.engine.is_candidate("life-d1"), 10)
    collector.stop()


@pytest.mark.usefixtures("matching")
async def test_bad_input_goes_to_the_dlq_with_a_reason_and_the_consumer_keeps_going(
    own_broker: str, db: asyncpg.Connection
) -> None:
    dlq = EventCollector(own_broker, [DRIVER_LOCATION.dlq, RIDE_REQUEST.dlq, RIDE_EVENT.dlq]).start()
    producer = EventProducer(own_broker, "test-bad")
    good = ping("bad-d1", 1)
    bad_pings = {
        b"{not json": "malformed JSON",
        good.replace(b'"v":1', b'"v":2'): "unsupported schema version",
        b'{"type":"driver.location","driver_id":"x"}': "invalid event",
        ping("bad-far", 1, lat=59.33, lon=18.06): "outside the service area",
        b'{"type":"driver.location","pad":"' + b"x" * 70_000 + b'"}': "message too large",
        ping("bad-\u0000-nul", 1): "NUL character",
        ping("bad-huge-seq", 2**63): "<= 9007199254740991",
    }
    for raw in bad_pings:
        producer.produce(DRIVER_LOCATION.name, raw, "bad-same-key")
    # backwards seq inside one batch: same key, same partition, produced in this order
    producer.produce(DRIVER_LOCATION.name, ping("bad-back", 5), "bad-back")
    producer.produce(DRIVER_LOCATION.name, ping("bad-back", 4), "bad-back")
    same_place = RideRequested(ride_id="bad-r1", rider_id="u", pickup=PICKUP, dropoff=PICKUP)
    outside = RideRequested(ride_id="bad-r2", rider_id="u", pickup=LatLon(59.33, 18.06), dropoff=DROPOFF)
    producer.produce(RIDE_REQUEST.name, encode(same_place), "bad-r1")
    producer.produce(RIDE_REQUEST.name, encode(outside), "bad-r2")
    nul_rider = RideRequested(ride_id="bad-r4", rider_id="u\u0000", pickup=PICKUP, dropoff=DROPOFF)
    producer.produce(RIDE_REQUEST.name, encode(nul_rider), "bad-r4")
    illegal = RideCompleted(ride_id="bad-r3", rider_id="u", driver_id="bad-d1")  # unknown ride
    producer.produce(RIDE_EVENT.name, encode(illegal), "bad-r3")
    producer.produce(DRIVER_LOCATION.name, good, "bad-d1")  # after all the poison: still applied
    producer.flush()
    producer.close()

    assert await wait_until(lambda: db.fetchval("SELECT count(*) = 1 FROM drivers WHERE driver_id = 'bad-d1'"), 30)
    reasons_wanted = [*bad_pings.values(), "backwards seq", "same place", "pickup outside", "unknown ride"]
    reasons_wanted.append("NUL character")  # the ride request with a NUL in rider_id

    def all_dead_lettered() -> bool:
        reasons = [i.headers.get("error.reason", b"").decode() for i in dlq.items]
        return all(any(w in r for r in reasons) for w in reasons_wanted)

    assert await wait_until(all_dead_lettered, 30), [i.headers.get("error.reason") for i in dlq.items]
    dlq.stop()
    nul_reasons = [i for i in dlq.items if b"NUL character" in i.headers.get("error.reason", b"")]
    assert {i.headers["error.topic"] for i in nul_reasons} == {
        DRIVER_LOCATION.name.encode(),
        RIDE_REQUEST.name.encode(),
    }
    assert await db.fetchval("SELECT count(*) FROM drivers WHERE driver_id IN ('bad-far')") == 0
    assert await db.fetchval("SELECT last_seq FROM drivers WHERE driver_id = 'bad-back'") == 5
    assert await db.fetchval("SELECT count(*) FROM rides WHERE ride_id LIKE 'bad-r%'") == 0
    assert await db.fetchval("SELECT count(*) FROM drivers WHERE driver_id LIKE 'bad-%'") == 2  # bad-d1, bad-back


async def test_request_with_no_driver_in_radius_expires_with_a_reason(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    settings = MatchingSettings(
        kafka_bootstrap=own_broker,
        database_url=fresh_database_url,
        matching_port=free_port(),
        matching_mode="batched",
        matching_batch_window_ms=200,
        matching_radius_m=1000,
        matching_request_timeout_s=1.5,
        matching_eta_model="straight_line",
        matching_group_id="expiry",
        driver_presence_ttl_s=600,
    )
    service = MatchingService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    try:
        assert await wait_until(lambda: service.started, 30)
        await db.execute(
            "INSERT INTO drivers (driver_id, lat, lon, status, last_seq, last_ts, last_seen_ms) "
            "VALUES ('exp-far', 57.7400, 12.0500, 'available', 1, 0, (extract(epoch from now()) * 1000)::bigint)"
        )
        engine = make_engine(fresh_database_url)
        ride_id = await create_ride(make_sessionmaker(engine), "rider-x", PICKUP, DROPOFF)
        await engine.dispose()

        def expired() -> bool:
            return any(getattr(e, "ride_id", None) == ride_id for e in collector.events(RideExpired))

        assert await wait_until(expired, 30)
        event = next(e for e in collector.events(RideExpired) if e.ride_id == ride_id)
        assert "no available driver within 1000 m" in event.reason
        row = await db.fetchrow("SELECT status, reason, expired_at, driver_id FROM rides WHERE ride_id = $1", ride_id)
        assert row["status"] == "expired" and row["reason"] == event.reason and row["expired_at"] is not None
        assert row["driver_id"] is None
        assert await db.fetchval("SELECT status FROM drivers WHERE driver_id = 'exp-far'") == "available"
        assert not [e for e in collector.events(RideAssigned) if e.ride_id == ride_id]
    finally:
        collector.stop()
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_rider_cancel_through_the_api_frees_the_driver_for_matching(
    matching: MatchingService, own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    import httpx

    from ridehail.harness.services import rides_app
    from ridehail.harness.tokens import LocalSigner

    producer = EventProducer(own_broker, "test-cancel")
    producer.produce(DRIVER_LOCATION.name, ping("cancel-d1", 1, 57.7005, 11.9705), "cancel-d1")
    producer.close()
    assert await wait_until(lambda: matching.engine.is_candidate("cancel-d1"), 30)
    signer = LocalSigner()
    headers = {"Authorization": f"Bearer {signer.token('rider-c')}"}
    body = {"pickup": {"lat": PICKUP.lat, "lon": PICKUP.lon}, "dropoff": {"lat": DROPOFF.lat, "lon": DROPOFF.lon}}
    async with (
        rides_app(fresh_database_url, signer) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        ride_id = (await client.post("/api/rides", json=body, headers=headers)).json()["ride_id"]
        assert await wait_until(
            lambda: db.fetchval("SELECT driver_id = 'cancel-d1' FROM rides WHERE ride_id = $1", ride_id), 30
        )
        assert not await matching.engine.is_candidate("cancel-d1")
        r = await client.delete(f"/api/rides/{ride_id}", headers=headers)
        assert r.status_code == 200
    # the gateway's cancel released the driver in the same transaction: a candidate again at once
    assert await matching.engine.is_candidate("cancel-d1")
    driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = 'cancel-d1'")
    assert (driver["status"], driver["current_ride_id"]) == ("available", None)
    rows = await db.fetch("SELECT type FROM ride_events WHERE ride_id = $1 ORDER BY id", ride_id)
    assert [r["type"] for r in rows] == ["ride.requested", "ride.assigned", "ride.cancelled"]
    assert await db.fetchval("SELECT status FROM rides WHERE ride_id = $1", ride_id) == "cancelled"


async def test_assignment_without_arrival_is_cancelled_by_the_system_and_frees_the_driver(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    settings = MatchingSettings(
        kafka_bootstrap=own_broker,
        database_url=fresh_database_url,
        matching_port=free_port(),
        matching_batch_window_ms=200,
        matching_refresh_s=0.5,
        matching_pickup_timeout_s=1.0,
        matching_eta_model="straight_line",
        matching_group_id="stale-assignment",
        driver_presence_ttl_s=600,
    )
    service = MatchingService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    try:
        assert await wait_until(lambda: service.started, 30)
        await db.execute(
            "INSERT INTO drivers (driver_id, lat, lon, status, last_seq, last_ts, last_seen_ms) "
            "VALUES ('silent-d1', 57.7002, 11.9702, 'available', 1, 0, (extract(epoch from now()) * 1000)::bigint)"
        )
        engine = make_engine(fresh_database_url)
        ride_id = await create_ride(make_sessionmaker(engine), "rider-s", PICKUP, DROPOFF)
        await engine.dispose()

        def cancelled() -> bool:
            return any(e.ride_id == ride_id for e in collector.events(RideCancelled))

        assert await wait_until(cancelled, 30)
        event = next(e for e in collector.events(RideCancelled) if e.ride_id == ride_id)
        assert (event.by, event.driver_id) == ("system", "silent-d1")
        assert "did not reach the pickup" in event.reason
        row = await db.fetchrow("SELECT status, reason FROM rides WHERE ride_id = $1", ride_id)
        assert (row["status"], row["reason"]) == ("cancelled", event.reason)
        driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = 'silent-d1'")
        assert (driver["status"], driver["current_ride_id"]) == ("available", None)
        types = [
            r["type"] for r in await db.fetch("SELECT type FROM ride_events WHERE ride_id = $1 ORDER BY id", ride_id)
        ]
        assert types == ["ride.requested", "ride.assigned", "ride.cancelled"]
    finally:
        collector.stop()
        stop.set()
        await asyncio.wait_for(task, 30)
