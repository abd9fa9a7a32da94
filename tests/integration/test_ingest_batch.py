"""The ingest edge's controls against real Postgres and the real embedded broker: batches of pings
answered per item (stored / stale / rejected) in one upsert statement, who may send a batch, group
commit writing concurrent single-ping requests in fewer statements, and several worker processes
sharing the port."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid

import asyncpg
import httpx
import pytest

from ridehail.bench.experiments.infra import ServiceProcess, remove_tree, temp_root
from ridehail.common.ports import free_port
from ridehail.domain.events import DriverLocation, encode
from ridehail.harness.tokens import serving_jwks
from tests.integration.test_ingest import SIGNER, as_driver, ping, running_edge

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {SIGNER.token('telematics-gw', 'admin')}"}


def batch(*pings: DriverLocation | bytes) -> bytes:
    return b"[" + b",".join(p if isinstance(p, bytes) else encode(p) for p in pings) + b"]"


def commits(metrics: str) -> dict[str, float]:
    found = re.findall(r'ridehail_ingest_commits_total\{kind="(\w+)"\} ([0-9.e+]+)', metrics)
    return {k: float(v) for k, v in found}


async def test_a_batch_is_answered_per_item_in_one_statement(database_url: str, pg: asyncpg.Connection) -> None:
    a, b = f"ba-{uuid.uuid4().hex[:6]}", f"bb-{uuid.uuid4().hex[:6]}"
    async with running_edge(database_url=database_url, ingest_mode="rest") as base, httpx.AsyncClient() as client:
        url = f"{base}/ingest/pings"
        assert (await client.post(f"{base}/ingest/ping", content=encode(ping(a, 5)), headers=as_driver(a))).json() == {
            "status": "stored"
        }
        before = commits((await client.get(f"{base}/metrics")).text)
        body = batch(
            ping(a, 4),  # older than the stored seq 5
            ping(b, 1, lat=57.71),
            b'{"type":"driver.location","driver_id":"x"}',  # invalid: no seq/position
            ping(b, 3, lat=57.73),  # newer than the other ping of b in the same batch
            ping(a, 6, lat=57.69),
            ping(b, 2),
            encode(ping(b, 9, lat=59.33)),  # outside the service area
        )
        r = await client.post(url, content=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert [x["status"] for x in got] == ["stale", "stale", "rejected", "stored", "stored", "stale", "rejected"]
        assert "outside the service area" in got[6]["reason"] and got[2]["reason"]
        after = commits((await client.get(f"{base}/metrics")).text)
        assert after.get("batch", 0) - before.get("batch", 0) == 1  # the whole batch: one statement
        rows = {
            r["driver_id"]: (r["last_seq"], r["lat"])
            for r in await pg.fetch("SELECT driver_id, last_seq, lat FROM drivers WHERE driver_id = ANY($1)", [a, b])
        }
        assert rows == {a: (6, 57.69), b: (3, 57.73)}
        # the request as a whole: malformed, not an array, empty, too many
        assert (await client.post(url, content=b"[{", headers=ADMIN)).status_code == 400
        assert (await client.post(url, content=b'{"a":1}', headers=ADMIN)).status_code == 422
        assert (await client.post(url, content=b"[]", headers=ADMIN)).status_code == 422
        too_many = batch(*(ping(f"m{i}", 1) for i in range(501)))
        r = await client.post(url, content=too_many, headers=ADMIN)
        assert r.status_code == 413 and "501" in r.json()["detail"]
        # a body the single-ping route would refuse (4 KB) is fine in a batch
        assert (
            await client.post(url, content=batch(*(ping(b, 10 + i) for i in range(40))), headers=ADMIN)
        ).status_code == 200
        for junk in (b"\xff\xfe", b'[1, null, "x", []]', b"[" + b"9" * 400 + b"]", b"null"):
            r = await client.post(url, content=junk, headers=ADMIN)
            assert 200 <= r.status_code < 500, (junk, r.status_code)


async def test_who_may_send_a_batch(database_url: str, pg: asyncpg.Connection) -> None:
    me, other = f"me-{uuid.uuid4().hex[:6]}", f"ot-{uuid.uuid4().hex[:6]}"
    async with running_edge(database_url=database_url, ingest_mode="rest") as base, httpx.AsyncClient() as client:
        url = f"{base}/ingest/pings"
        assert (await client.post(url, content=batch(ping(me, 1)))).status_code == 401
        r = await client.post(url, content=batch(ping(me, 1), ping(other, 1)), headers=as_driver(me))
        assert r.status_code == 403 and other in r.json()["detail"]
        rider = {"Authorization": f"Bearer {SIGNER.token(me, 'rider')}"}
        assert (await client.post(url, content=batch(ping(me, 1)), headers=rider)).status_code == 403
        assert await pg.fetchval("SELECT count(*) FROM drivers WHERE driver_id = ANY($1)", [me, other]) == 0
        r = await client.post(url, content=batch(ping(me, 1), ping(me, 2)), headers=as_driver(me))
        assert r.status_code == 200 and [x["status"] for x in r.json()["results"]] == ["stale", "stored"]
    assert await pg.fetchval("SELECT last_seq FROM drivers WHERE driver_id = $1", me) == 2


async def test_a_batch_in_rest_kafka_mode_is_produced(broker: str) -> None:
    driver = f"bk-{uuid.uuid4().hex[:6]}"
    async with running_edge(kafka_bootstrap=broker, ingest_mode="rest-kafka") as base, httpx.AsyncClient() as client:
        r = await client.post(f"{base}/ingest/pings", content=batch(ping(driver, 1), b"{}"), headers=ADMIN)
        assert r.status_code == 200
        assert [x["status"] for x in r.json()["results"]] == ["acknowledged", "rejected"]


async def test_group_commit_writes_concurrent_requests_in_fewer_statements(
    database_url: str, pg: asyncpg.Connection
) -> None:
    prefix = f"gc{uuid.uuid4().hex[:6]}-"
    ids = [f"{prefix}{i:03d}" for i in range(60)]
    async with (
        running_edge(database_url=database_url, ingest_mode="rest", ingest_group_commit_ms=20.0) as base,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client,
    ):
        url = f"{base}/ingest/ping"
        await client.post(url, content=encode(ping(ids[0], 5)), headers=as_driver(ids[0]))  # so seq 3 is stale
        before = commits((await client.get(f"{base}/metrics")).text)
        answers = await asyncio.gather(
            *(client.post(url, content=encode(ping(d, 3 if d == ids[0] else 1)), headers=as_driver(d)) for d in ids)
        )
        after = commits((await client.get(f"{base}/metrics")).text)
    assert [a.status_code for a in answers] == [200] * 60
    assert [a.json()["status"] for a in answers] == ["stale"] + ["stored"] * 59
    statements = after.get("group", 0) - before.get("group", 0)
    assert 1 <= statements <= 20, statements  # 60 requests, far fewer statements
    assert after.get("single", 0) == before.get("single", 0)
    rows = await pg.fetch("SELECT driver_id, last_seq FROM drivers WHERE driver_id LIKE $1", prefix + "%")
    assert len(rows) == 60 and {r["last_seq"] for r in rows if r["driver_id"] != ids[0]} == {1}


async def test_group_commit_answers_503_for_all_when_the_commit_fails() -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    async with (
        running_edge(database_url=dead, ingest_mode="rest", ingest_group_commit_ms=20.0, ingest_timeout_s=2.0) as base,
        httpx.AsyncClient(timeout=10) as client,
    ):
        answers = await asyncio.gather(
            *(
                client.post(f"{base}/ingest/ping", content=encode(ping(f"d{i}", 1)), headers=as_driver(f"d{i}"))
                for i in range(5)
            )
        )
    assert [a.status_code for a in answers] == [503] * 5


def test_two_workers_serve_the_port_from_two_processes(database_url: str) -> None:
    root = temp_root("ridehail-workers-")
    port = free_port()
    try:
        with serving_jwks(SIGNER) as auth_url:
            edge = ServiceProcess(
                "ingest-2w",
                "ingest",
                {
                    "RIDEHAIL_DATABASE_URL": database_url,
                    "RIDEHAIL_INGEST_PORT": str(port),
                    "RIDEHAIL_INGEST_WORKERS": "2",
                    "RIDEHAIL_AUTH_BASE_URL": auth_url,
                },
                port,
                root,
            )
            edge.start()
            try:
                seen: set[int] = set()
                deadline = time.monotonic() + 30  # the second worker starts after the first is up
                while time.monotonic() < deadline:  # a fresh connection each time: the kernel picks a listener
                    with httpx.Client() as client:
                        seen.add(client.get(f"{edge.base_url}/stats").json()["pid"])
                    if len(seen) == 2:
                        break
                assert len(seen) == 2, seen
                assert seen <= set(edge.pids())
                assert edge.proc is not None and edge.proc.pid in seen
            finally:
                edge.stop()
            assert all(not os.path.exists(f"/proc/{pid}") for pid in seen - {edge.proc.pid if edge.proc else 0})
    finally:
        remove_tree(root)
