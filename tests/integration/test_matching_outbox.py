"""The transactional outbox: rows committed with the business change reach the topic even when the
relay dies between the broker's ack and marking them published (a republish, absorbed by the
consumers' idempotence), and relays in several processes keep the table's order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ridehail.common.db import make_engine, make_sessionmaker, transaction
from ridehail.common.kafka import EventProducer
from ridehail.common.outbox import OutboxRelay, add_outbox
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import LatLon, RideExpired, RideRequested
from ridehail.domain.topics import RIDE_EVENT
from ridehail.gateway.ride_requests import create_ride
from ridehail.harness.events import EventCollector
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker() -> Iterator[str]:
    with private_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


class RelayDyingAfterPublish(OutboxRelay):
    """Publishes (and gets the acks), then dies before the UPDATE that marks the rows."""

    async def _publish(self, rows):  # type: ignore[no-untyped-def]
        await super()._publish(rows)
        raise SystemExit("relay process died after publishing")


async def test_crash_between_publish_and_mark_republishes_and_nothing_is_lost(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection
) -> None:
    engine = make_engine(fresh_database_url)
    sessions = make_sessionmaker(engine)
    events = [RideExpired(ride_id=f"r{i}", rider_id="u", reason="test") for i in range(20)]
    async with transaction(sessions) as session:
        for e in events:
            await add_outbox(session, RIDE_EVENT.name, e.ride_id, e)
    collector = EventCollector(own_broker, [RIDE_EVENT.name]).start()
    producer = EventProducer(own_broker, "outbox-test")

    with pytest.raises(SystemExit):
        await RelayDyingAfterPublish(sessions, producer).publish_once()
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 20  # not marked
    assert await wait_until(lambda: len(collector.events()) == 20, 30)  # but already on the topic

    relay = OutboxRelay(sessions, producer)  # the restarted process
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    assert await wait_until(lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"), 30)
    assert await wait_until(lambda: len(collector.events()) == 40, 30)
    # republished with the same event ids: consumers drop the second copy by id
    counts = Counter(e.event_id for e in collector.events())
    assert counts == {e.event_id: 2 for e in events}

    # commits made while the relay runs are published at once (NOTIFY), in commit order per key
    later = [RideExpired(ride_id="late", rider_id="u", reason=f"test {i}") for i in range(5)]
    for e in later:
        async with transaction(sessions) as session:
            await add_outbox(session, RIDE_EVENT.name, e.ride_id, e)
    assert await wait_until(lambda: len(collector.events()) == 45, 30)
    assert [e.event_id for e in collector.events()][40:] == [e.event_id for e in later]
    stop.set()
    await task
    collector.stop()
    producer.close()
    await engine.dispose()


RELAY_SCRIPT = """
import asyncio, sys
from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.kafka import EventProducer
from ridehail.common.outbox import OutboxRelay

async def main():
    engine = make_engine(sys.argv[2])
    await OutboxRelay(make_sessionmaker(engine), EventProducer(sys.argv[1], "relay-proc"), batch_size=50).run(
        asyncio.Event()
    )

asyncio.run(main())
"""


async def test_kill_9_relay_while_requests_commit_then_restart_publishes_every_request(
    own_broker: str, fresh_database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    engine = make_engine(fresh_database_url)
    sessions = make_sessionmaker(engine)
    collector = EventCollector(own_broker, ["ridehail.ride.request.v1"]).start()
    log = open(tmp_path / "relay.log", "ab")  # noqa: SIM115

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", RELAY_SCRIPT, own_broker, fresh_database_url],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    proc = start()
    ride_ids = []
    try:
        for i in range(200):
            ride_ids.append(await create_ride(sessions, f"u-{i}", LatLon(57.70, 11.97), LatLon(57.71, 11.99)))
            if i == 100:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if i == 150:
                proc = start()
        assert await wait_until(lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"), 60)
        assert await wait_until(lambda: {e.ride_id for e in collector.events(RideRequested)} == set(ride_ids), 30)
        # per key order holds: each ride has exactly one request, and the topic never got a row twice
        # except around the kill (at most one in-flight batch republished)
        seen = [e.ride_id for e in collector.events(RideRequested)]
        assert len(seen) - len(set(seen)) <= 50
    finally:
        collector.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        await engine.dispose()
