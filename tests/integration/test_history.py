"""Trip history and cancellation rules through the rides API on real Postgres: keyset pagination,
riders see only their own rides, admins everything, fees after the grace period, and bad input
(someone else's ride, a completed ride, a bad cursor) answered with a 4xx and a reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.harness.services import rides_app
from tests.fixtures.auth import RealTokens

pytestmark = pytest.mark.integration

BODY = {"pickup": {"lat": 57.7000, "lon": 11.9700}, "dropoff": {"lat": 57.7100, "lon": 11.9900}}


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


@pytest.fixture
async def api(fresh_database_url: str, real_tokens: RealTokens) -> AsyncIterator[tuple[httpx.AsyncClient, RealTokens]]:
    """The rides API verifying tokens of the real auth service (its JWKS), with a token source."""
    signer = real_tokens
    async with (
        rides_app(fresh_database_url, signer) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client, signer


def auth(signer: RealTokens, sub: str, role: str = "rider") -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(sub, role)}"}


async def request_rides(
    client: httpx.AsyncClient, headers: dict[str, str], n: int, db: asyncpg.Connection
) -> list[str]:
    """``n`` rides of one rider, all ``requested`` at the end. A rider holds one active ride at a
    time, so each is parked (expired) while the next is requested, then all are put back."""
    ids = []
    for _ in range(n):
        r = await client.post("/api/rides", json=BODY, headers=headers)
        assert r.status_code == 202, r.text
        ids.append(r.json()["ride_id"])
        await db.execute("UPDATE rides SET status = 'expired' WHERE ride_id = $1", ids[-1])
    await db.execute("UPDATE rides SET status = 'requested' WHERE ride_id = ANY($1)", ids)
    return ids


async def all_pages(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        r = await client.get("/api/rides", params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["rides"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_history_pages_newest_first_and_riders_see_only_their_own(
    api: tuple[httpx.AsyncClient, RealTokens], db: asyncpg.Connection
) -> None:
    client, signer = api
    alice, bob = auth(signer, "alice"), auth(signer, "bob")
    mine = await request_rides(client, alice, 5, db)
    theirs = await request_rides(client, bob, 2, db)
    await db.execute(
        "UPDATE rides SET status = 'completed', fare = 123.45, completed_at = now() WHERE ride_id = $1", mine[0]
    )

    pages = await all_pages(client, alice, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [r["ride_id"] for p in pages for r in p]
    assert listed == list(reversed(mine))  # newest first, each ride exactly once
    oldest = pages[-1][0]
    assert (oldest["status"], oldest["fare"]) == ("completed", "123.45")
    assert {r["rider_id"] for p in pages for r in p} == {signer.user_id("alice")}

    assert [r["ride_id"] for p in await all_pages(client, bob) for r in p] == list(reversed(theirs))
    r = await client.get("/api/rides", params={"mine": "false"}, headers=alice)
    assert r.status_code == 403 and "admin" in r.json()["detail"]

    admin = auth(signer, "root", role="admin")
    everyone = [r["ride_id"] for p in await all_pages(client, admin, mine="false", limit=3) for r in p]
    assert sorted(everyone) == sorted(mine + theirs)
    assert (await client.get("/api/rides", headers=admin)).json()["rides"] == []  # the admin's own: none


async def test_history_bad_input_gets_4xx_with_a_reason(api: tuple[httpx.AsyncClient, RealTokens]) -> None:
    client, signer = api
    alice = auth(signer, "alice")
    for params, status in (
        ({"cursor": "not-a-cursor"}, 422),
        ({"limit": 0}, 422),
        ({"limit": 101}, 422),
        ({"mine": "perhaps"}, 422),
    ):
        r = await client.get("/api/rides", params=params, headers=alice)
        assert r.status_code == status, (params, r.text)
        assert r.json()["detail"]
    assert (await client.get("/api/rides")).status_code == 401
    viewer = auth(signer, "v", role="viewer")
    assert (await client.get("/api/rides", headers=viewer)).status_code == 403


async def test_cancel_rules_someone_elses_completed_and_fee_after_grace(
    api: tuple[httpx.AsyncClient, RealTokens], db: asyncpg.Connection
) -> None:
    client, signer = api
    alice, bob = auth(signer, "alice"), auth(signer, "bob")
    free, late, done, waiting = await request_rides(client, alice, 4, db)

    # Someone else's ride: 404 (its existence is not revealed), and nothing changes.
    r = await client.post(f"/api/rides/{free}/cancel", headers=bob)
    assert r.status_code == 404 and r.json()["detail"] == "ride not found"
    assert await db.fetchval("SELECT status FROM rides WHERE ride_id = $1", free) == "requested"

    # A completed ride: 409 with the reason.
    await db.execute("UPDATE rides SET status = 'completed', completed_at = now() WHERE ride_id = $1", done)
    r = await client.delete(f"/api/rides/{done}", headers=alice)
    assert r.status_code == 409 and "completed" in r.json()["detail"]

    # Within the grace period (still looking for a driver): free.
    r = await client.post(f"/api/rides/{free}/cancel", headers=alice)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["cancellation_fee"]) == ("cancelled", "0.00")

    # The driver has been on the way for 5 minutes: the fee applies and is stored on the ride.
    await db.execute(
        "INSERT INTO drivers (driver_id, lat, lon, status, last_seq, last_ts, current_ride_id) "
        "VALUES ('hist-d1', 57.70, 11.97, 'to_pickup', 1, 0, $1)",
        late,
    )
    await db.execute(
        "UPDATE rides SET status = 'assigned', driver_id = 'hist-d1', assigned_at = now() - interval '5 minutes' "
        "WHERE ride_id = $1",
        late,
    )
    r = await client.post(f"/api/rides/{late}/cancel", headers=alice)
    assert r.status_code == 200
    assert (r.json()["cancelled_by"], r.json()["cancellation_fee"], r.json()["currency"]) == ("rider", "40.00", "SEK")
    ride = await db.fetchrow("SELECT cancellation_fee, fare, fare_breakdown FROM rides WHERE ride_id = $1", late)
    assert str(ride["cancellation_fee"]) == "40.00" and str(ride["fare"]) == "40.00"
    assert '"cancellation_fee"' in ride["fare_breakdown"]
    driver = await db.fetchrow("SELECT status, current_ride_id FROM drivers WHERE driver_id = 'hist-d1'")
    assert (driver["status"], driver["current_ride_id"]) == ("available", None)

    # Cancelling again answers the first outcome (idempotent), fee included, nothing charged twice.
    again = await client.delete(f"/api/rides/{late}", headers=alice)
    assert again.status_code == 200 and again.json()["cancellation_fee"] == "40.00"
    history = await db.fetch("SELECT type FROM ride_events WHERE ride_id = $1 ORDER BY id", late)
    assert [h["type"] for h in history].count("ride.cancelled") == 1

    trips = {t["ride_id"]: t for t in (await client.get("/api/rides", headers=alice)).json()["rides"]}
    assert trips[late]["cancellation_fee"] == "40.00" and trips[late]["cancelled_by"] == "rider"
    assert trips[free]["cancellation_fee"] == "0.00"
    assert trips[waiting]["status"] == "requested"
