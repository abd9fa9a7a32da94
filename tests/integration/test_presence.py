"""Driver presence on the real broker and Postgres: drivers that stopped pinging are not
candidates (the restart on a database full of a previous run's drivers), a driver that goes
silent while offered is skipped at once, a silent driver on a trip is flagged and not cancelled,
every driver comes back with its next ping, and offer time-outs land at their deadline rather
than at the next assignment round."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import DriverLocation, LatLon, encode, now_ms
from ridehail.domain.roads import RoadGraph
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.gateway.ride_requests import create_ride
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import rides_app, running_matching, wait_until
from ridehail.harness.tokens import LocalSigner
from ridehail.matching.settings import MatchingSettings
from ridehail.simulator.drivers import FleetConfig
from ridehail.simulator.fleet import Fleet
from ridehail.simulator.runtime import FleetRunner, make_consumer

pytestmark = pytest.mark.integration

PICKUPS = [LatLon(57.7000, 11.9700), LatLon(57.7080, 11.9500), LatLon(57.6900, 11.9900)]
DROPOFF = LatLon(57.7200, 12.0100)


@pytest.fixture
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


def settings(bootstrap: str, database_url: str, **overrides: Any) -> MatchingSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "database_url": database_url,
        "matching_port": free_port(),
        "matching_eta_model": "straight_line",
        "matching_group_id": f"presence-{uuid.uuid4().hex[:6]}",
    }
    values.update(overrides)
    return MatchingSettings(**values)


class Pinger:
    """Drivers that ping every ``every_s`` until told to stop (each driver on its own)."""

    def __init__(self, producer: EventProducer, every_s: float = 0.2) -> None:
        self.producer, self.every_s = producer, every_s
        self.drivers: dict[str, tuple[float, float, bool]] = {}
        self.seq = 0
        self._task: asyncio.Task[None] | None = None

    def ping_once(self) -> None:
        self.seq += 1
        for driver_id, (lat, lon, offers) in self.drivers.items():
            ping = DriverLocation(driver_id=driver_id, seq=self.seq, lat=lat, lon=lon, offers=offers)
            self.producer.produce(DRIVER_LOCATION.name, encode(ping), driver_id)
        self.producer.flush()

    async def _run(self) -> None:
        while True:
            self.ping_once()
            await asyncio.sleep(self.every_s)

    def __enter__(self) -> Pinger:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def ride_types(db: asyncpg.Connection, ride_id: str) -> list[str]:
    return [r["type"] for r in await db.fetch("SELECT type FROM ride_events WHERE ride_id = $1 ORDER BY id", ride_id)]


async def offered_to(db: asyncpg.Connection, ride_id: str, driver_id: str) -> bool:
    row = await db.fetchrow("SELECT status, driver_id FROM rides WHERE ride_id = $1", ride_id)
    return row is not None and (row["status"], row["driver_id"]) == ("offered", driver_id)


async def test_restart_on_a_database_of_silent_drivers_assigns_within_10_s(
    fresh_database_url: str, db: asyncpg.Connection
) -> None:
    """The report: `ridehail up --drivers 2000`, Ctrl-C, `ridehail up --drivers 30` on the same
    database. The first run's drivers stay `available` in Postgres and never ping again; the
    second run's real simulated fleet pings and answers offers. Every ride goes to a pinging
    driver within 10 s, none is offered to a silent one, and a silent driver that pings again is
    a candidate at once."""
    old = {f"old-{i:03d}": PICKUPS[i % len(PICKUPS)] for i in range(300)}  # nearest to every pickup
    with private_broker() as first_broker:  # the first run (its broker and matching), then Ctrl-C
        async with running_matching(settings(first_broker, fresh_database_url)):
            producer = EventProducer(first_broker, "first-run")
            last_ping = now_ms() - 60_000  # their last pings, a minute before the second run starts
            for i, (driver_id, p) in enumerate(old.items()):
                ping = DriverLocation(
                    driver_id=driver_id, seq=1, lat=p.lat + 1e-4 * (i // 3), lon=p.lon, offers=True, ts=last_ping
                )
                producer.produce(DRIVER_LOCATION.name, encode(ping), driver_id)
            producer.close()
            assert await wait_until(lambda: db.fetchval("SELECT count(*) = 300 FROM drivers"), 30)
    assert await db.fetchval("SELECT count(*) FROM drivers WHERE status = 'available'") == 300

    with private_broker() as bootstrap:  # the second run, on the same database
        second = settings(bootstrap, fresh_database_url, matching_radius_m=20_000)  # the whole city
        async with running_matching(second) as matching:
            fleet = Fleet(
                RoadGraph.load(),
                FleetConfig(drivers=6, seed=16, prefix="live-", mean_online_min=0.0, accept_probability=1.0),
            )
            producer = EventProducer(bootstrap, "second-run")
            dlq = EventProducer(bootstrap, "second-run-dlq")
            runner = FleetRunner(fleet, producer)
            consumer, _ = make_consumer(bootstrap, fleet, runner, dlq, group_id="second-run-sim")
            stop = asyncio.Event()
            tasks = [asyncio.create_task(runner.run(stop)), asyncio.create_task(consumer.run(stop))]
            engine = make_engine(fresh_database_url)
            try:
                assert await wait_until(lambda: bool(consumer.stats.partitions), 30)
                assert await wait_until(lambda: matching.engine.presence.present == 6, 30)
                assert matching.stats()["drivers_known"] == 306
                sessions = make_sessionmaker(engine)
                requested = {}
                for i, pickup in enumerate(PICKUPS):
                    ride_id = await create_ride(sessions, f"rider-{i}", pickup, DROPOFF)
                    requested[ride_id] = now_ms()
                rows: list[Any] = []

                async def all_assigned() -> bool:
                    rows[:] = await db.fetch(
                        "SELECT ride_id, driver_id, (extract(epoch from assigned_at) * 1000)::bigint AS at "
                        "FROM rides WHERE status = 'assigned'"
                    )
                    return len(rows) == len(requested)

                assert await wait_until(all_assigned, 10.0), await db.fetch("SELECT ride_id, status FROM rides")
                assert all(r["driver_id"].startswith("live-") for r in rows)
                assert all(r["at"] - requested[r["ride_id"]] < 10_000 for r in rows)
                offered_old = await db.fetchval(
                    "SELECT count(*) FROM ride_events "
                    "WHERE type = 'ride.offered' AND payload->>'driver_id' LIKE 'old-%'"
                )
                assert offered_old == 0

                # one of the first run's drivers comes back: its next ping makes it a candidate
                back = DriverLocation(driver_id="old-000", seq=2, lat=PICKUPS[0].lat, lon=PICKUPS[0].lon)
                producer.produce(DRIVER_LOCATION.name, encode(back), "old-000")
                producer.flush()
                assert await wait_until(lambda: matching.engine.is_candidate("old-000"), 10)
                ride_id = await create_ride(sessions, "rider-back", PICKUPS[0], DROPOFF)
                assert await wait_until(
                    lambda: db.fetchval("SELECT driver_id = 'old-000' FROM rides WHERE ride_id = $1", ride_id), 10
                )
            finally:
                stop.set()
                await asyncio.gather(*tasks)
                producer.close(5)
                dlq.close(5)
                await engine.dispose()


async def test_a_driver_that_goes_silent_while_offered_is_skipped_at_once(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    near, far = "sil-near", "sil-far"
    cfg = settings(
        own_broker,
        fresh_database_url,
        driver_presence_ttl_s=1.0,
        matching_offer_timeout_s=60,
        matching_offer_check_ms=100,
    )
    async with running_matching(cfg):
        producer = EventProducer(own_broker, "test-silent-offer")
        near_pinger, far_pinger = Pinger(producer), Pinger(producer)
        near_pinger.drivers[near] = (PICKUPS[0].lat + 0.0005, PICKUPS[0].lon, True)
        far_pinger.drivers[far] = (PICKUPS[0].lat + 0.0030, PICKUPS[0].lon, True)
        engine = make_engine(fresh_database_url)
        try:
            with far_pinger, near_pinger:
                assert await wait_until(lambda: db.fetchval("SELECT count(*) = 2 FROM drivers"), 30)
                ride_id = await create_ride(make_sessionmaker(engine), "rider-s", PICKUPS[0], DROPOFF)
                assert await wait_until(lambda: offered_to(db, ride_id, near), 30)
                near_pinger.stop()  # the offered driver's phone goes quiet; it never answers
                # skipped once silent for the TTL (1 s), long before the 60 s offer time-out
                assert await wait_until(lambda: offered_to(db, ride_id, far), 10)
            reason = await db.fetchval(
                "SELECT payload->>'reason' FROM ride_events WHERE ride_id = $1 AND type = 'ride.offer_timed_out'",
                ride_id,
            )
            assert "driver went silent" in reason
            assert (await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = $1", near)) == (
                "available",
                None,
            )
            types = await ride_types(db, ride_id)
            assert types == ["ride.requested", "ride.offered", "ride.offer_timed_out", "ride.offered"]
        finally:
            producer.close()
            await engine.dispose()


async def test_offer_time_outs_land_at_their_deadline_not_at_the_next_round(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    """Rounds every 10 s and the periodic offer check every 10 s: only the offer's own deadline
    can withdraw it within a second of its 1 s time-out (before, it waited for the next round)."""
    cfg = settings(
        own_broker,
        fresh_database_url,
        matching_batch_window_ms=10_000,
        matching_offer_check_ms=10_000,
        matching_offer_timeout_s=1.0,
        matching_offer_max_tries=3,
        driver_presence_ttl_s=600,
    )
    async with running_matching(cfg):
        producer = EventProducer(own_broker, "test-deadline")
        pinger = Pinger(producer)
        for i in range(3):  # offer-capable drivers that never answer
            pinger.drivers[f"mute-{i}"] = (PICKUPS[1].lat + 0.001 * (i + 1), PICKUPS[1].lon, True)
        pinger.ping_once()
        producer.close()
        assert await wait_until(lambda: db.fetchval("SELECT count(*) = 3 FROM drivers"), 30)
        engine = make_engine(fresh_database_url)
        ride_id = await create_ride(make_sessionmaker(engine), "rider-d", PICKUPS[1], DROPOFF)
        await engine.dispose()
        expired = "SELECT status = 'expired' FROM rides WHERE ride_id = $1"
        assert await wait_until(lambda: db.fetchval(expired, ride_id), 30)
    events = await db.fetch("SELECT type, payload FROM ride_events WHERE ride_id = $1 ORDER BY id", ride_id)
    offered = [json.loads(e["payload"]) for e in events if e["type"] == "ride.offered"]
    timed_out = [json.loads(e["payload"]) for e in events if e["type"] == "ride.offer_timed_out"]
    assert len(offered) == len(timed_out) == 3
    for offer, out in zip(offered, timed_out, strict=True):
        assert out["offer_id"] == offer["event_id"] and out["reason"] == "no answer within 1 s"
        late_ms = out["ts"] - offer["expires_ts"]
        assert 0 <= late_ms < 1000, late_ms  # never early; late by milliseconds, not by a round


async def test_a_silent_driver_on_a_trip_is_flagged_not_cancelled_and_comes_back(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    cfg = settings(own_broker, fresh_database_url, driver_presence_ttl_s=1.0, matching_offers=False)
    signer = LocalSigner()
    viewer = {"Authorization": f"Bearer {signer.token('viewer-1', role='viewer')}"}
    rider = {"Authorization": f"Bearer {signer.token('rider-t')}"}
    async with (
        running_matching(cfg) as matching,
        rides_app(fresh_database_url, signer, driver_presence_ttl_s=1.0) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api,
    ):
        producer = EventProducer(own_broker, "test-silent-trip")
        pinger = Pinger(producer)
        pinger.drivers["trip-d1"] = (PICKUPS[2].lat + 0.0005, PICKUPS[2].lon, False)
        pinger.drivers["idle-d2"] = (PICKUPS[0].lat, PICKUPS[0].lon, False)
        try:
            with pinger:
                assert await wait_until(lambda: matching.engine.is_candidate("trip-d1"), 30)
                pickup = {"lat": PICKUPS[2].lat, "lon": PICKUPS[2].lon}
                body = {"pickup": pickup, "dropoff": {"lat": DROPOFF.lat, "lon": DROPOFF.lon}}
                ride_id = (await api.post("/api/rides", json=body, headers=rider)).json()["ride_id"]
                assert await wait_until(
                    lambda: db.fetchval("SELECT driver_id = 'trip-d1' FROM rides WHERE ride_id = $1", ride_id), 30
                )
                assert (await api.get(f"/api/rides/{ride_id}", headers=rider)).json()["driver_present"] is True
            # both phones go quiet: the one on its way to the pickup is flagged, the idle one is offline
            assert await wait_until(lambda: matching.stats()["drivers_silent_on_ride"] == 1, 10)
            view = (await api.get(f"/api/rides/{ride_id}", headers=rider)).json()
            assert (view["status"], view["driver_present"]) == ("assigned", False)  # flagged, not cancelled
            trip = (await api.get("/api/drivers/trip-d1", headers=viewer)).json()
            assert (trip["status"], trip["present"], trip["current_ride_id"]) == ("to_pickup", False, ride_id)
            assert trip["silent_for_s"] >= 1.0
            idle = (await api.get("/api/drivers/idle-d2", headers=viewer)).json()
            assert (idle["status"], idle["reported_status"], idle["present"]) == ("offline", "available", False)
            assert not await matching.engine.is_candidate("idle-d2")
            await asyncio.sleep(2.0)  # missed pings for several seconds: still the same ride
            assert await db.fetchval("SELECT status FROM rides WHERE ride_id = $1", ride_id) == "assigned"
            assert (await api.get("/api/drivers/nobody", headers=viewer)).status_code == 404

            with pinger:  # both come back with their next pings
                assert await wait_until(lambda: matching.stats()["drivers_silent_on_ride"] == 0, 10)
                assert (await api.get(f"/api/rides/{ride_id}", headers=rider)).json()["driver_present"] is True
                idle = (await api.get("/api/drivers/idle-d2", headers=viewer)).json()
                assert (idle["status"], idle["present"], idle["silent_for_s"]) == ("available", True, None)
                assert await matching.engine.is_candidate("idle-d2")
        finally:
            with contextlib.suppress(Exception):
                producer.close()
