"""The ride request REST API on real Postgres: 202 + Location + outbox row, own rides only,
cancel before pickup, and 4xx with a reason for bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import msgspec
import pytest

from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.events import RideCancelled, RideRequested
from ridehail.domain.topics import RIDE_EVENT, RIDE_REQUEST
from ridehail.harness.services import rides_app
from tests.fixtures.auth import RealTokens

pytestmark = pytest.mark.integration

BODY = {"pickup": {"lat": 57.70, "lon": 11.97}, "dropoff": {"lat": 57.71, "lon": 11.99}}


@pytest.fixture
def signer(real_tokens: RealTokens) -> RealTokens:
    """Tokens issued by the real auth service, verified against its JWKS."""
    return real_tokens


@pytest.fixture
async def client(fresh_database_url: str, signer: RealTokens) -> AsyncIterator[httpx.AsyncClient]:
    async with rides_app(fresh_database_url, signer) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


def auth(signer: RealTokens, sub: str = "rider-a", role: str = "rider") -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(sub, role)}"}


async def test_request_answers_202_with_location_and_writes_ride_history_and_outbox_atomically(
    client: httpx.AsyncClient, signer: RealTokens, db: asyncpg.Connection
) -> None:
    r = await client.post("/api/rides", json=BODY, headers=auth(signer))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "requested"
    assert r.headers["location"] == f"/api/rides/{body['ride_id']}"
    ride = await db.fetchrow("SELECT rider_id, status, pickup_lat FROM rides WHERE ride_id = $1", body["ride_id"])
    assert (ride["rider_id"], ride["status"], ride["pickup_lat"]) == (signer.user_id("rider-a"), "requested", 57.70)
    outbox = await db.fetch("SELECT topic, key, payload, published_at FROM outbox")
    assert len(outbox) == 1 and outbox[0]["topic"] == RIDE_REQUEST.name and outbox[0]["key"] == body["ride_id"]
    event = msgspec.json.decode(outbox[0]["payload"], type=RideRequested)
    assert (
        event.ride_id == body["ride_id"]
        and event.rider_id == signer.user_id("rider-a")
        and outbox[0]["published_at"] is None
    )
    history = await db.fetch("SELECT type, event_id FROM ride_events WHERE ride_id = $1", body["ride_id"])
    assert [(h["type"], h["event_id"]) for h in history] == [("ride.requested", event.event_id)]


async def test_get_returns_state_and_history_to_its_rider_and_admins_only(
    client: httpx.AsyncClient, signer: RealTokens
) -> None:
    ride_id = (await client.post("/api/rides", json=BODY, headers=auth(signer))).json()["ride_id"]
    own = await client.get(f"/api/rides/{ride_id}", headers=auth(signer))
    assert own.status_code == 200
    view = own.json()
    assert view["status"] == "requested" and view["rider_id"] == signer.user_id("rider-a")
    assert view["pickup"] == BODY["pickup"] and view["dropoff"] == BODY["dropoff"]
    assert [h["type"] for h in view["history"]] == ["ride.requested"]
    other = await client.get(f"/api/rides/{ride_id}", headers=auth(signer, "rider-b"))
    assert other.status_code == 404
    admin = await client.get(f"/api/rides/{ride_id}", headers=auth(signer, "root", "admin"))
    assert admin.status_code == 200 and admin.json()["ride_id"] == ride_id
    assert (await client.get("/api/rides/nope", headers=auth(signer))).status_code == 404


async def test_cancel_before_pickup_then_409_after_pickup(
    client: httpx.AsyncClient, signer: RealTokens, db: asyncpg.Connection
) -> None:
    ride_id = (await client.post("/api/rides", json=BODY, headers=auth(signer))).json()["ride_id"]
    await db.execute(
        "INSERT INTO drivers (driver_id, lat, lon, status, last_seq, last_ts, current_ride_id) "
        "VALUES ('drv', 57.7, 11.97, 'to_pickup', 1, 0, $1)",
        ride_id,
    )
    await db.execute("UPDATE rides SET status = 'assigned', driver_id = 'drv' WHERE ride_id = $1", ride_id)
    assert (await client.delete(f"/api/rides/{ride_id}", headers=auth(signer, "rider-b"))).status_code == 404
    r = await client.delete(f"/api/rides/{ride_id}", headers=auth(signer))
    assert r.status_code == 200 and (r.json()["ride_id"], r.json()["status"]) == (ride_id, "cancelled")
    assert r.json()["cancellation_fee"] == "0.00"  # assigned just now: within the grace period
    driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = 'drv'")
    assert (driver["status"], driver["current_ride_id"]) == ("available", None)
    row = await db.fetchrow("SELECT payload FROM outbox WHERE topic = $1", RIDE_EVENT.name)
    cancelled = msgspec.json.decode(row["payload"], type=RideCancelled)
    assert (cancelled.ride_id, cancelled.by, cancelled.driver_id) == (ride_id, "rider", "drv")
    assert (await client.delete(f"/api/rides/{ride_id}", headers=auth(signer))).status_code == 200  # idempotent
    view = (await client.get(f"/api/rides/{ride_id}", headers=auth(signer))).json()
    assert view["status"] == "cancelled" and view["cancelled_at"] is not None
    assert [h["type"] for h in view["history"]] == ["ride.requested", "ride.cancelled"]

    on_board = (await client.post("/api/rides", json=BODY, headers=auth(signer))).json()["ride_id"]
    await db.execute("UPDATE rides SET status = 'in_progress' WHERE ride_id = $1", on_board)
    late = await client.delete(f"/api/rides/{on_board}", headers=auth(signer))
    assert late.status_code == 409 and "in_progress" in late.json()["detail"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"pickup": {"lat": 59.33, "lon": 18.06}, "dropoff": BODY["dropoff"]}, "outside the service area"),
        ({"pickup": BODY["pickup"], "dropoff": BODY["pickup"]}, "same place"),
        ({"pickup": BODY["pickup"]}, "Field required"),
        ({"pickup": {"lat": "north", "lon": 11.97}, "dropoff": BODY["dropoff"]}, "valid number"),
        ({"pickup": {"lat": 91, "lon": 11.97}, "dropoff": BODY["dropoff"]}, "less than or equal"),
    ],
)
async def test_bad_requests_get_422_with_a_reason(
    client: httpx.AsyncClient, signer: RealTokens, db: asyncpg.Connection, body: dict, reason: str
) -> None:
    r = await client.post("/api/rides", json=body, headers=auth(signer))
    assert r.status_code == 422
    assert reason in r.text
    assert await db.fetchval("SELECT count(*) FROM rides") == 0


async def test_malformed_json_missing_token_and_wrong_role(client: httpx.AsyncClient, signer: RealTokens) -> None:
    r = await client.post("/api/rides", content=b"{nope", headers={**auth(signer), "Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text
    assert (await client.post("/api/rides", json=BODY)).status_code == 401
    r = await client.post("/api/rides", json=BODY, headers={"Authorization": "Bearer not.a.token"})
    assert r.status_code == 401
    r = await client.post("/api/rides", json=BODY, headers=auth(signer, "d1", "driver"))
    assert r.status_code == 403 and "role" in r.json()["detail"]


async def test_database_down_gives_503_with_a_reason_never_a_500(signer: RealTokens) -> None:
    from ridehail.common.ports import free_port

    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    async with rides_app(unreachable, signer) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post("/api/rides", json=BODY, headers=auth(signer))
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "unavailable" in r.json()["detail"]
            assert (await c.get("/api/rides/x", headers=auth(signer))).status_code == 503
            assert (await c.delete("/api/rides/x", headers=auth(signer))).status_code == 503
