"""Quotes on real Postgres: price from road distance, time and the pickup cell's surge; a ride with
``quote_id`` locks that price once; expired, foreign, used, unknown or mismatched quotes and bad
input are refused with a reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import h3
import httpx
import msgspec
import pytest

from ridehail.common.db import make_engine, make_sessionmaker
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.common.tariff import current_tariff
from ridehail.domain.events import RideRequested, SurgeChanged
from ridehail.domain.fares import compute_fare
from ridehail.gateway.hub import Hub
from ridehail.gateway.quote_book import load_surge_snapshot
from ridehail.harness.services import gateway_api
from ridehail.harness.tokens import LocalSigner

pytestmark = pytest.mark.integration

PICKUP = {"lat": 57.7000, "lon": 11.9700}
DROPOFF = {"lat": 57.7100, "lon": 11.9900}
BODY = {"pickup": PICKUP, "dropoff": DROPOFF}
PICKUP_CELL = h3.latlng_to_cell(PICKUP["lat"], PICKUP["lon"], 8)


@pytest.fixture
def signer() -> LocalSigner:
    return LocalSigner()


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
async def client(fresh_database_url: str, signer: LocalSigner, hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        gateway_api(fresh_database_url, signer.verifier(), hub) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


def auth(signer: LocalSigner, sub: str = "rider-a", role: str = "rider") -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(sub, role)}"}


def surge(hub: Hub, multiplier: float, cell: str = PICKUP_CELL) -> None:
    hub.apply_surge(SurgeChanged(cell=cell, resolution=8, multiplier=multiplier))


async def test_quote_prices_the_road_trip_with_the_pickup_surge_and_is_stored(
    client: httpx.AsyncClient, signer: LocalSigner, hub: Hub, db: asyncpg.Connection
) -> None:
    surge(hub, 1.5)
    r = await client.post("/api/quotes", json=BODY, headers=auth(signer))
    assert r.status_code == 201, r.text
    q = r.json()
    assert q["cell"] == PICKUP_CELL and q["surge_multiplier"] == 1.5
    straight = 1_600  # metres between the two points as the crow flies
    assert straight < q["distance_m"] < 4 * straight and q["duration_s"] > 60
    expected = compute_fare(current_tariff(), q["distance_m"], q["duration_s"], 1.5).total
    assert Decimal(str(q["price"])) == pytest.approx(expected, abs=Decimal("0.02"))
    assert q["breakdown"]["surge_multiplier"] == 1.5 and q["currency"] == current_tariff().currency
    assert q["expires_in_s"] > 0 and r.headers["location"] == f"/api/quotes/{q['quote_id']}"
    row = await db.fetchrow(
        "SELECT rider_id, price, surge_multiplier, ride_id FROM quotes WHERE quote_id = $1", q["quote_id"]
    )
    assert (row["rider_id"], row["surge_multiplier"], row["ride_id"]) == ("rider-a", 1.5, None)
    assert row["price"] == Decimal(str(q["price"]))

    stored = await client.get(r.headers["location"], headers=auth(signer))
    assert stored.status_code == 200 and stored.json()["price"] == q["price"] and stored.json()["ride_id"] is None
    assert 0 < stored.json()["expires_in_s"] <= q["expires_in_s"]
    foreign = await client.get(r.headers["location"], headers=auth(signer, "rider-b"))
    assert foreign.status_code == 404

    calm = await client.post("/api/quotes", json=BODY, headers=auth(signer))
    surge(hub, 1.0)
    calmer = await client.post("/api/quotes", json=BODY, headers=auth(signer))
    assert Decimal(str(calmer.json()["price"])) < Decimal(str(calm.json()["price"]))


async def test_ride_with_quote_id_locks_the_quoted_multiplier_and_price_once(
    client: httpx.AsyncClient, signer: LocalSigner, hub: Hub, db: asyncpg.Connection
) -> None:
    surge(hub, 1.8)
    q = (await client.post("/api/quotes", json=BODY, headers=auth(signer))).json()
    surge(hub, 2.5)  # surge rises after the quote: the quote's price holds
    r = await client.post("/api/rides", json={**BODY, "quote_id": q["quote_id"]}, headers=auth(signer))
    assert r.status_code == 202, r.text
    ride_id = r.json()["ride_id"]
    ride = await db.fetchrow("SELECT quote_id, surge_multiplier, quoted_price FROM rides WHERE ride_id = $1", ride_id)
    assert (ride["quote_id"], ride["surge_multiplier"]) == (q["quote_id"], 1.8)
    assert ride["quoted_price"] == Decimal(str(q["price"]))
    assert await db.fetchval("SELECT ride_id FROM quotes WHERE quote_id = $1", q["quote_id"]) == ride_id
    payload = await db.fetchval("SELECT payload FROM outbox WHERE key = $1", ride_id)
    event = msgspec.json.decode(payload, type=RideRequested)
    assert (event.surge_multiplier, event.quote_id) == (1.8, q["quote_id"])

    await db.execute("UPDATE rides SET status = 'completed' WHERE ride_id = $1", ride_id)  # one active ride each
    again = await client.post("/api/rides", json={**BODY, "quote_id": q["quote_id"]}, headers=auth(signer))
    assert again.status_code == 409 and "already used" in again.json()["detail"]


async def test_ride_without_quote_carries_the_current_pickup_multiplier(
    client: httpx.AsyncClient, signer: LocalSigner, hub: Hub, db: asyncpg.Connection
) -> None:
    surge(hub, 1.3)
    ride_id = (await client.post("/api/rides", json=BODY, headers=auth(signer))).json()["ride_id"]
    ride = await db.fetchrow("SELECT quote_id, surge_multiplier, quoted_price FROM rides WHERE ride_id = $1", ride_id)
    assert (ride["quote_id"], ride["surge_multiplier"], ride["quoted_price"]) == (None, 1.3, None)


async def test_expired_foreign_unknown_and_mismatched_quotes_are_refused_with_a_reason(
    client: httpx.AsyncClient, signer: LocalSigner, db: asyncpg.Connection
) -> None:
    q = (await client.post("/api/quotes", json=BODY, headers=auth(signer))).json()
    foreign = await client.post("/api/rides", json={**BODY, "quote_id": q["quote_id"]}, headers=auth(signer, "rider-b"))
    assert foreign.status_code == 403 and "another rider" in foreign.json()["detail"]
    unknown = await client.post("/api/rides", json={**BODY, "quote_id": "nope"}, headers=auth(signer))
    assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]
    elsewhere = {"pickup": {"lat": 57.69, "lon": 11.95}, "dropoff": DROPOFF, "quote_id": q["quote_id"]}
    moved = await client.post("/api/rides", json=elsewhere, headers=auth(signer))
    assert moved.status_code == 422 and "pickup differs" in moved.json()["detail"]
    await db.execute("UPDATE quotes SET expires_at = now() - interval '1 second' WHERE quote_id = $1", q["quote_id"])
    expired = await client.post("/api/rides", json={**BODY, "quote_id": q["quote_id"]}, headers=auth(signer))
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    # none of the refusals left a ride or claimed the quote
    assert await db.fetchval("SELECT count(*) FROM rides") == 0
    assert await db.fetchval("SELECT ride_id FROM quotes WHERE quote_id = $1", q["quote_id"]) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"pickup": {"lat": 59.33, "lon": 18.06}, "dropoff": DROPOFF}, "outside the service area"),
        ({"pickup": PICKUP, "dropoff": PICKUP}, "same place"),
        ({"pickup": PICKUP}, "Field required"),
        ({"pickup": {"lat": "x", "lon": 11.97}, "dropoff": DROPOFF}, "valid number"),
    ],
)
async def test_bad_quote_requests_get_422_with_a_reason(
    client: httpx.AsyncClient, signer: LocalSigner, body: dict[str, object], reason: str
) -> None:
    r = await client.post("/api/quotes", json=body, headers=auth(signer))
    assert r.status_code == 422
    assert reason in r.text


async def test_quotes_need_a_rider_token(client: httpx.AsyncClient, signer: LocalSigner) -> None:
    assert (await client.post("/api/quotes", json=BODY)).status_code == 401
    assert (await client.post("/api/quotes", json=BODY, headers=auth(signer, "d1", "driver"))).status_code == 403
    too_long = await client.post("/api/rides", json={**BODY, "quote_id": "q" * 65}, headers=auth(signer))
    assert too_long.status_code == 422


async def test_gateway_seeds_surge_from_postgres_without_overriding_live_values(
    fresh_database_url: str, db: asyncpg.Connection
) -> None:
    other = h3.latlng_to_cell(57.72, 11.95, 8)
    await db.executemany(
        "INSERT INTO surge_cells (cell, multiplier, demand, supply, ts) VALUES ($1, $2, 5, 1, 1)",
        [(PICKUP_CELL, 2.0), (other, 1.4)],
    )
    hub = Hub()
    surge(hub, 1.2)  # a live value already arrived from the topic
    engine = make_engine(fresh_database_url)
    assert await load_surge_snapshot(make_sessionmaker(engine), hub) == 2
    await engine.dispose()
    assert hub.surge == {PICKUP_CELL: 1.2, other: 1.4}
