"""The auth service's limits and keys end to end: login throttles per account and per address,
trusted proxies, key rotation and restarts, one password check per account at a time."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from ridehail.common.auth_tokens import TokenVerifier
from tests.fixtures.auth import TEST_PASSWORD, AuthService, serve_auth
from tests.integration.auth_http import bearer, claims_of, login, new_email, register

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(auth_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=auth_server, timeout=30.0) as c:
        yield c


# -- throttling -------------------------------------------------------------------------------------------
@pytest.fixture
def strict_auth(database_url: str) -> Iterator[AuthService]:
    with serve_auth(
        database_url, login_free_failures=2, login_backoff_base_s=30.0, ip_attempts_per_minute=1000
    ) as service:
        yield service


async def test_failed_logins_back_off_per_account(strict_auth: AuthService) -> None:
    async with httpx.AsyncClient(base_url=strict_auth.base_url) as c:
        email = new_email()
        assert (await register(c, email)).status_code == 201
        for _ in range(3):  # two free failures, the third starts the backoff
            assert (await login(c, email, "wrong password!")).status_code == 400
        blocked = await login(c, email)  # even the right password waits
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1
        # an unknown account is throttled the same way (no enumeration through 429s)
        ghost = new_email("ghost")
        for _ in range(3):
            assert (await login(c, ghost, "wrong password!")).status_code == 400
        assert (await login(c, ghost, "wrong password!")).status_code == 429
        # other accounts are unaffected
        other = new_email()
        await register(c, other)
        assert (await login(c, other)).status_code == 200
        assert strict_auth.state.account_backoff.failures(email) == 3


async def test_failed_logins_are_throttled_per_client_address(database_url: str) -> None:
    with serve_auth(database_url, ip_attempts_per_minute=3) as service:
        async with httpx.AsyncClient(base_url=service.base_url) as c:
            email = new_email()
            assert (await register(c, email)).status_code == 201
            for i in range(3):  # spraying over different accounts from one address
                assert (await login(c, new_email(f"spray{i}"), "wrong password!")).status_code == 400
            limited = await login(c, email)
            assert limited.status_code == 429
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            code_guess = await c.post("/auth/exchange", json={"code": "guess"})
            assert code_guess.status_code == 429


async def test_forwarded_address_is_believed_only_from_trusted_proxies(database_url: str) -> None:
    with serve_auth(database_url, ip_attempts_per_minute=2, trusted_proxies="127.0.0.1") as service:
        async with httpx.AsyncClient(base_url=service.base_url) as c:
            for _ in range(2):
                r = await c.post(
                    "/auth/token",
                    data={"username": new_email(), "password": "wrong password!"},
                    headers={"X-Forwarded-For": "203.0.113.7"},
                )
                assert r.status_code == 400
            blocked = await c.post(
                "/auth/token",
                data={"username": new_email(), "password": "wrong password!"},
                headers={"X-Forwarded-For": "203.0.113.7"},
            )
            assert blocked.status_code == 429
            # another client behind the same proxy is not blocked
            other = await c.post(
                "/auth/token",
                data={"username": new_email(), "password": "wrong password!"},
                headers={"X-Forwarded-For": "198.51.100.9"},
            )
            assert other.status_code == 400


# -- key rotation -------------------------------------------------------------------------------------------
async def test_key_rotation_keeps_old_tokens_valid_until_they_expire(fresh_database_url: str) -> None:
    from ridehail.auth.keys import rotate_signing_key

    with serve_auth(fresh_database_url) as service:
        async with httpx.AsyncClient(base_url=service.base_url) as c:
            old_pair = service.issue_pair("rider")
            old_kid = json.loads(base64.urlsafe_b64decode(old_pair["access_token"].split(".")[0] + "=="))["kid"]
            verifier = TokenVerifier(service.jwks_url, min_refresh_interval_s=0)
            await verifier.verify(old_pair["access_token"])

            new_kid = service.run(rotate_signing_key(service.state.sessions, "RS256"))
            service.run(service.state.reload_keys())
            assert new_kid != old_kid

            new_pair = service.issue_pair("rider")
            assert json.loads(base64.urlsafe_b64decode(new_pair["access_token"].split(".")[0] + "=="))["kid"] == new_kid
            kids = {k["kid"] for k in (await c.get("/.well-known/jwks.json")).json()["keys"]}
            assert kids == {old_kid, new_kid}
            # the verifier learns the new kid on first sight and still accepts the old one
            assert (await verifier.verify(new_pair["access_token"])).role == "rider"
            assert (await verifier.verify(old_pair["access_token"])).role == "rider"
            assert (await c.get("/auth/me", headers=bearer(old_pair["access_token"]))).status_code == 200
            # the old session's refresh token (signed by the retired key) still rotates
            refreshed = await c.post("/auth/refresh", json={"refresh_token": old_pair["refresh_token"]})
            assert refreshed.status_code == 200

            # once every token of the retired key has expired, the key leaves the JWKS
            conn = await asyncpg.connect(fresh_database_url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                await conn.execute(
                    "UPDATE signing_keys SET retired_at = now() - interval '400 days' WHERE kid = $1", old_kid
                )
            finally:
                await conn.close()
            service.run(service.state.reload_keys())
            kids = {k["kid"] for k in (await c.get("/.well-known/jwks.json")).json()["keys"]}
            assert kids == {new_kid}
            assert (await c.get("/auth/me", headers=bearer(old_pair["access_token"]))).status_code == 401


async def test_keys_survive_a_restart(fresh_database_url: str) -> None:
    with serve_auth(fresh_database_url) as service:
        token = service.issue_token("driver")
    with serve_auth(fresh_database_url) as service:
        async with httpx.AsyncClient(base_url=service.base_url) as c:
            assert (await c.get("/auth/me", headers=bearer(token))).status_code == 200


def test_fixture_issue_token_gives_real_tokens(issue_token: Any, auth_service: AuthService) -> None:
    for role in ("rider", "driver", "admin", "viewer"):
        token = issue_token(role)
        assert claims_of(token)["role"] == role
        assert httpx.get(f"{auth_service.base_url}/auth/me", headers=bearer(token)).status_code == 200
    assert TEST_PASSWORD


async def test_one_password_check_per_account_at_a_time(strict_auth: AuthService) -> None:
    async with httpx.AsyncClient(base_url=strict_auth.base_url) as c:
        email = new_email()
        assert (await register(c, email)).status_code == 201
        strict_auth.state.logins_in_flight.add(email)  # as if a check for this account were running
        try:
            parallel = await login(c, email)
            assert parallel.status_code == 429 and parallel.headers["retry-after"] == "1"
        finally:
            strict_auth.state.logins_in_flight.discard(email)
        assert (await login(c, email)).status_code == 200
        assert not strict_auth.state.logins_in_flight
