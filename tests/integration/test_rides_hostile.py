"""The rides and quotes API against hostile input, on real Postgres: one active ride per rider
(409, race-free: concurrent requests cannot both pass), a per-rider request rate limit (429 with
Retry-After), and input Postgres would refuse (a NUL byte, an out-of-range value) answered 4xx
with a reason, never 503 "database unavailable"."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.harness.services import gateway_api
from ridehail.harness.tokens import LocalSigner

pytestmark = pytest.mark.integration

BODY = {"pickup": {"lat": 57.70, "lon": 11.97}, "dropoff": {"lat": 57.71, "lon": 11.99}}


@pytest.fixture(scope="module")
def signer() -> LocalSigner:
    return LocalSigner()


def auth(signer: LocalSigner, sub: str = "rider-a", role: str = "rider") -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(sub, role)}"}


@pytest.fixture
async def client(fresh_database_url: str, signer: LocalSigner) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        gateway_api(fresh_database_url, signer.verifier(), ride_requests_per_minute=100) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


async def test_one_active_ride_per_rider(
    client: httpx.AsyncClient, signer: LocalSigner, db: asyncpg.Connection
) -> None:
    first = await client.post("/api/rides", json=BODY, headers=auth(signer))
    assert first.status_code == 202
    second = await client.post("/api/rides", json=BODY, headers=auth(signer))
    assert second.status_code == 409
    assert "active ride" in second.json()["detail"] and first.json()["ride_id"] in second.json()["detail"]
    assert (await client.post("/api/rides", json=BODY, headers=auth(signer, "rider-b"))).status_code == 202
    for status in ("assigned", "in_progress"):  # active until it ends, whatever the stage
        await db.execute("UPDATE rides SET status = $2 WHERE ride_id = $1", first.json()["ride_id"], status)
        assert (await client.post("/api/rides", json=BODY, headers=auth(signer))).status_code == 409
    await db.execute("UPDATE rides SET status = 'completed' WHERE ride_id = $1", first.json()["ride_id"])
    assert (await client.post("/api/rides", json=BODY, headers=auth(signer))).status_code == 202


async def test_concurrent_requests_of_one_rider_cannot_both_pass(
    client: httpx.AsyncClient, signer: LocalSigner, db: asyncpg.Connection
) -> None:
    for attempt in range(3):
        headers = auth(signer, f"racer-{attempt}")
        answers = await asyncio.gather(*(client.post("/api/rides", json=BODY, headers=headers) for _ in range(12)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [202] + [409] * 11, codes
    assert await db.fetchval("SELECT count(*) FROM rides WHERE rider_id LIKE 'racer-%'") == 3


async def test_ride_requests_are_rate_limited_per_rider(fresh_database_url: str, signer: LocalSigner) -> None:
    async with (
        gateway_api(fresh_database_url, signer.verifier(), ride_requests_per_minute=3) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        codes = [(await c.post("/api/rides", json=BODY, headers=auth(signer, "eager"))).status_code for _ in range(5)]
        assert codes[:3] == [202, 409, 409] and codes[3:] == [429, 429]  # refused ones count too
        limited = await c.post("/api/rides", json=BODY, headers=auth(signer, "eager"))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "too many ride requests" in limited.json()["detail"]
        assert (await c.post("/api/rides", json=BODY, headers=auth(signer, "calm"))).status_code == 202


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


INVALID = [
    ("GET", "/api/rides/abc%00def", None),
    ("DELETE", "/api/rides/abc%00def", None),
    ("POST", "/api/rides/abc%00def/cancel", None),
    ("GET", "/api/rides/" + "r" * 5000, None),
    ("GET", "/api/quotes/q%00q", None),
    ("GET", "/api/rides?cursor=" + _cursor("2024-01-01T00:00:00+00:00|a\x00b"), None),
    ("GET", "/api/rides?cursor=" + _cursor("0001-01-01T00:00:00+14:00|abc"), None),
    ("GET", "/api/rides?cursor=" + _cursor("9999-12-31T23:59:59-14:00|abc"), None),
    ("GET", "/api/rides?limit=99999999999999999999", None),
    ("POST", "/api/rides", {**BODY, "quote_id": "q\u0000q"}),
    ("POST", "/api/rides", {**BODY, "quote_id": "q" * 65}),
    ("POST", "/api/rides", b'{"pickup":{"lat":1e400,"lon":11.97},"dropoff":{"lat":57.71,"lon":11.99}}'),
    ("POST", "/api/quotes", {**BODY, "pickup": {"lat": 57.70, "lon": 2**80}}),
]


@pytest.mark.parametrize(("method", "path", "body"), INVALID, ids=[f"{m} {p[:60]}" for m, p, _ in INVALID])
async def test_invalid_input_answers_4xx_never_database_unavailable(
    client: httpx.AsyncClient, signer: LocalSigner, method: str, path: str, body: object
) -> None:
    if isinstance(body, bytes):
        headers = {**auth(signer), "Content-Type": "application/json"}
        r = await client.request(method, path, content=body, headers=headers)
    else:
        r = await client.request(method, path, json=body, headers=auth(signer))
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert "unavailable" not in r.text


async def test_the_central_handler_answers_what_postgres_refuses_with_4xx(fresh_database_url: str) -> None:
    """Whatever a route forgot to validate: Postgres' refusal is the input's fault (422/409), an
    unreachable database is the only 503."""
    from fastapi import FastAPI
    from sqlalchemy import text

    from ridehail.common.db import make_engine, make_sessionmaker, transaction
    from ridehail.common.http_errors import install_error_handlers
    from ridehail.common.ports import free_port

    app = FastAPI()
    install_error_handlers(app)
    engines = {
        "up": make_engine(fresh_database_url),
        "down": make_engine(f"postgresql+asyncpg://x@127.0.0.1:{free_port()}/x"),
    }
    queries = {
        "nul": ("SELECT CAST(:v AS text)", "a\x00b"),
        "int": ("SELECT CAST(:v AS bigint)", 2**70),
        "numeric": ("SELECT CAST(:v AS numeric(10,2))", 1e300),
        "unique": ("INSERT INTO rides (ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon) "
                   "VALUES (:v, 'u', 'completed', 0, 0, 0, 0)", "dup"),
    }  # fmt: skip

    @app.get("/{db}/{case}")
    async def run(db: str, case: str) -> dict[str, str]:
        sql, value = queries[case]
        async with transaction(make_sessionmaker(engines[db])) as session:
            await session.execute(text(sql), {"v": value})
        return {"ok": "yes"}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/up/unique")).status_code == 200
        for case, status in (("nul", 422), ("int", 422), ("numeric", 422), ("unique", 409)):
            r = await c.get(f"/up/{case}")
            assert r.status_code == status and "refused by the database" in r.json()["detail"], (case, r.text)
        down = await c.get("/down/nul")
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
    for engine in engines.values():
        await engine.dispose()
