"""The ingestion edge against real Postgres and the real embedded broker: the rest path writes the
driver row with the seq guard, the rest-kafka path lands on the topic keyed by driver id, bad
pings get a 4xx and are counted apart, a dead backend gets 503 + Retry-After, and the simulator's
REST transport fills the drivers table through the edge."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer

from ridehail.common.health import make_server
from ridehail.common.ports import free_port
from ridehail.common.settings import load_settings
from ridehail.domain.events import DriverLocation, EventDecoder, encode
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.harness.tokens import DriverTokens, LocalSigner
from ridehail.ingest.app import create_app
from ridehail.ingest.settings import IngestSettings
from ridehail.simulator.main import SimulatorService
from ridehail.simulator.settings import SimulatorSettings

pytestmark = pytest.mark.integration


SIGNER = LocalSigner()
TOKENS = DriverTokens(SIGNER)


def as_driver(driver_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS(driver_id)}"}


@contextlib.asynccontextmanager
async def running_edge(**overrides: object) -> AsyncIterator[str]:
    port = free_port()
    settings = load_settings(IngestSettings, ingest_port=port, log_level="WARNING", **overrides)
    server = make_server(create_app(settings, verifier=SIGNER.verifier()), "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "edge did not start"
        assert not task.done(), f"edge died: {task.exception() if task.done() else ''}"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


def ping(driver_id: str, seq: int, lat: float = 57.70) -> DriverLocation:
    return DriverLocation(driver_id=driver_id, seq=seq, lat=lat, lon=11.97, heading=45.0, speed=7.0)


async def test_rest_path_writes_the_row_and_keeps_the_newest_seq(database_url: str, pg: asyncpg.Connection) -> None:
    driver = f"ing-{uuid.uuid4().hex[:8]}"
    async with running_edge(database_url=database_url, ingest_mode="rest") as base, httpx.AsyncClient() as client:
        r = await client.post(
            f"{base}/ingest/ping", content=encode(ping(driver, 5, lat=57.71)), headers=as_driver(driver)
        )
        assert (r.status_code, r.json()) == (200, {"status": "stored"})
        row = await pg.fetchrow("SELECT lat, last_seq, status FROM drivers WHERE driver_id = $1", driver)
        assert (row["lat"], row["last_seq"], row["status"]) == (57.71, 5, "available")
        # an older ping (late retry, reordering) is answered 200 but changes nothing
        r = await client.post(
            f"{base}/ingest/ping", content=encode(ping(driver, 3, lat=57.66)), headers=as_driver(driver)
        )
        assert (r.status_code, r.json()) == (200, {"status": "stale"})
        r = await client.post(
            f"{base}/ingest/ping", content=encode(ping(driver, 6, lat=57.72)), headers=as_driver(driver)
        )
        assert r.json() == {"status": "stored"}
        row = await pg.fetchrow("SELECT lat, last_seq FROM drivers WHERE driver_id = $1", driver)
        assert (row["lat"], row["last_seq"]) == (57.72, 6)
        stats = (await client.get(f"{base}/stats")).json()
        assert (stats["stored"], stats["stale"]) == (2, 1)
        assert (await client.get(f"{base}/readyz")).json()["checks"] == {"database": True}


async def test_malformed_pings_get_4xx_are_counted_and_write_nothing(database_url: str, pg: asyncpg.Connection) -> None:
    driver = f"bad-{uuid.uuid4().hex[:8]}"
    async with running_edge(database_url=database_url, ingest_mode="rest") as base, httpx.AsyncClient() as client:
        bodies = [
            b"{not json",
            encode(ping(driver, 1)).replace(b'"seq":1', b'"seq":-4'),
            encode(ping(driver, 1, lat=59.33)),
            encode(ping(driver, 1)) + b" " * 5000,
        ]
        post = client.post
        statuses = [
            (await post(f"{base}/ingest/ping", content=b, headers=as_driver(driver))).status_code for b in bodies
        ]
        assert statuses == [400, 422, 422, 413]
        detail = (await client.post(f"{base}/ingest/ping", content=bodies[2], headers=as_driver(driver))).json()[
            "detail"
        ]
        assert "outside the service area" in detail
        stats = (await client.get(f"{base}/stats")).json()
        assert stats["rejected"] == 5 and "stored" not in stats and "unavailable" not in stats
        metrics = (await client.get(f"{base}/metrics")).text
        assert 'ridehail_ingest_rejected_total{status="422"} 3.0' in metrics
    assert await pg.fetchval("SELECT count(*) FROM drivers WHERE driver_id = $1", driver) == 0


async def test_rest_kafka_path_lands_on_the_topic_keyed_by_driver(broker: str) -> None:
    driver = f"rk-{uuid.uuid4().hex[:8]}"
    async with running_edge(kafka_bootstrap=broker, ingest_mode="rest-kafka") as base, httpx.AsyncClient() as client:
        for seq in (1, 2, 3):
            r = await client.post(f"{base}/ingest/ping", content=encode(ping(driver, seq)), headers=as_driver(driver))
            assert (r.status_code, r.json()) == (202, {"status": "acknowledged"})
        assert (await client.get(f"{base}/readyz")).json()["checks"] == {"broker": True}
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([DRIVER_LOCATION.name])
    decoder = EventDecoder(DriverLocation)
    found: list[tuple[bytes | None, int, int]] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < 3 and time.monotonic() < deadline:
            msg = await asyncio.to_thread(consumer.poll, 0.5)
            if msg is None or msg.error():
                continue
            event = decoder.decode(msg.value())
            if isinstance(event, DriverLocation) and event.driver_id == driver:
                found.append((msg.key(), msg.partition(), event.seq))
    finally:
        consumer.close()
    assert [seq for _, _, seq in found] == [1, 2, 3]  # one key, one partition, in order
    assert {key for key, _, _ in found} == {driver.encode()}
    assert len({part for _, part, _ in found}) == 1


async def test_database_down_answers_503_with_retry_after() -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    async with (
        running_edge(database_url=dead, ingest_mode="rest", ingest_timeout_s=2.0, ingest_retry_after_s=3) as base,
        httpx.AsyncClient() as client,
    ):
        r = await client.post(f"{base}/ingest/ping", content=encode(ping("drv-x", 1)), headers=as_driver("drv-x"))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "3"
        assert "database unavailable" in r.json()["detail"]
        ready = await client.get(f"{base}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"database": False}
        # a malformed ping is still the client's fault, not the database's
        assert (await client.post(f"{base}/ingest/ping", content=b"{", headers=as_driver("drv-x"))).status_code == 400
        stats = (await client.get(f"{base}/stats")).json()
        assert (stats["unavailable"], stats["rejected"]) == (1, 1)


async def test_broker_down_answers_503_with_retry_after() -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with (
        running_edge(kafka_bootstrap=dead, ingest_mode="rest-kafka", ingest_timeout_s=1.0) as base,
        httpx.AsyncClient(timeout=10) as client,
    ):
        r = await client.post(f"{base}/ingest/ping", content=encode(ping("drv-y", 1)), headers=as_driver("drv-y"))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert "broker unavailable" in r.json()["detail"]


async def test_simulator_rest_transport_pings_reach_the_drivers_table(
    broker: str, database_url: str, pg: asyncpg.Connection
) -> None:
    prefix = f"sr{uuid.uuid4().hex[:6]}-"
    async with running_edge(database_url=database_url, ingest_mode="rest") as base:
        settings = load_settings(
            SimulatorSettings,
            kafka_bootstrap=broker,
            drivers=6,
            seed=5,
            driver_prefix=prefix,
            mean_online_min=0.0,
            simulator_transport="rest",
            simulator_ingest_url=f"{base}/ingest/ping",
            log_level="WARNING",
        )
        service = SimulatorService(settings, serve_http=False, consume=False, driver_token=TOKENS)
        await service.run(asyncio.Event(), duration_s=3.5)
    rows = await pg.fetch("SELECT driver_id, last_seq FROM drivers WHERE driver_id LIKE $1", prefix + "%")
    assert len(rows) == 6
    rest = service.stats()["rest"]
    assert rest["accepted"] >= 6 * 2 and rest["given_up"] == 0 and rest["rejected"] == 0
    assert rest["accepted"] == rest["submitted"]


async def test_a_ping_needs_the_token_of_its_own_driver(database_url: str, pg: asyncpg.Connection) -> None:
    driver = f"own-{uuid.uuid4().hex[:8]}"
    body = encode(ping(driver, 1))
    async with running_edge(database_url=database_url, ingest_mode="rest") as base, httpx.AsyncClient() as client:
        url = f"{base}/ingest/ping"
        missing = await client.post(url, content=body)
        assert missing.status_code == 401 and "bearer" in missing.headers["www-authenticate"].lower()
        forged = await client.post(
            url, content=body, headers={"Authorization": f"Bearer {LocalSigner().token(driver, 'driver')}"}
        )
        assert forged.status_code == 401  # signed by a key the edge does not trust
        expired = SIGNER.token(driver, "driver", ttl_s=-10)
        assert (await client.post(url, content=body, headers={"Authorization": f"Bearer {expired}"})).status_code == 401
        other = await client.post(url, content=body, headers=as_driver("someone-else"))
        assert other.status_code == 403 and driver in other.json()["detail"]
        rider = await client.post(
            url, content=body, headers={"Authorization": f"Bearer {SIGNER.token(driver, 'rider')}"}
        )
        assert rider.status_code == 403 and "driver" in rider.json()["detail"]
        assert await pg.fetchval("SELECT count(*) FROM drivers WHERE driver_id = $1", driver) == 0
        own = await client.post(url, content=body, headers=as_driver(driver))
        assert own.status_code == 200
    assert await pg.fetchval("SELECT count(*) FROM drivers WHERE driver_id = $1", driver) == 1


async def test_a_chunked_body_over_the_limit_gets_413_on_every_route(database_url: str) -> None:
    async with running_edge(database_url=database_url, ingest_mode="rest") as base, httpx.AsyncClient() as client:

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b" " * 1024  # 64 KB, no Content-Length: only the bytes read can tell

        for path in ("/ingest/ping", "/stats", "/healthz"):
            r = await client.post(base + path, content=chunks(), headers=as_driver("drv-c"))
            assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert (await client.get(f"{base}/stats")).json()["rejected"] >= 1


async def test_a_chunked_body_is_not_read_beyond_the_limit(database_url: str) -> None:
    settings = load_settings(IngestSettings, database_url=database_url, ingest_mode="rest", log_level="WARNING")
    app = create_app(settings, verifier=SIGNER.verifier())
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(10_000):  # 10 MB if read in full
            pulled += 1
            yield b" " * 1000

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        r = await client.post("/ingest/ping", content=endless(), headers=as_driver("drv-c"))
    assert r.status_code == 413
    assert pulled * 1000 <= settings.ingest_max_body_bytes + 2000, f"read {pulled} KB"
