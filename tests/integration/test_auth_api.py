"""The auth REST service end to end: real uvicorn server, real Postgres, real tokens."""

from __future__ import annotations

import asyncio
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from ridehail.common.auth_tokens import InvalidToken, TokenVerifier
from tests.fixtures.auth import AuthService
from tests.integration.auth_http import PASSWORD, bearer, claims_of, login, new_email, register, user_count

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(auth_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=auth_server, timeout=30.0) as c:
        yield c


# -- the happy path --------------------------------------------------------------------------------
async def test_register_login_me_refresh_logout(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    email = new_email()
    created = await register(client, email, role="driver")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == email and body["role"] == "driver" and "password" not in created.text

    response = await login(client, email.upper())  # emails are case-insensitive
    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair["token_type"] == "bearer" and 0 < pair["expires_in"] <= 900
    access = claims_of(pair["access_token"])
    assert access["typ"] == "access" and access["role"] == "driver" and access["sub"] == body["id"]
    assert access["iss"] == "ridehail-auth" and access["aud"] == "ridehail"
    assert claims_of(pair["refresh_token"])["typ"] == "refresh"

    me = await client.get("/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == body["id"] and me.json()["role"] == "driver"

    refreshed = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != pair["refresh_token"]
    # the session's absolute deadline does not move on rotation
    assert claims_of(second["refresh_token"])["exp"] == claims_of(pair["refresh_token"])["exp"]

    out = await client.post("/auth/logout", json={"refresh_token": second["refresh_token"]})
    assert out.status_code == 204
    again = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 401 and again.json()["detail"] == "refresh token revoked"
    revoked = await pg.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL", uuid.UUID(body["id"])
    )
    assert revoked == 0


async def test_stored_hash_is_argon2id_with_owasp_parameters(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    email = new_email()
    assert (await register(client, email)).status_code == 201
    stored = await pg.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    match = re.match(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$", stored)
    assert match, "not an argon2id hash"
    memory, time_cost, parallelism = map(int, match.groups())
    assert memory >= 19456 and time_cost >= 2 and parallelism >= 1
    assert PASSWORD not in stored


# -- refresh rotation and reuse detection ----------------------------------------------------------
async def test_refresh_reuse_revokes_the_whole_family(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    email = new_email()
    await register(client, email)
    first = (await login(client, email)).json()
    other_session = (await login(client, email)).json()  # a second device: another family

    second = (await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    # an attacker (or the victim) replays the already-used token
    replay = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401 and "already used" in replay.json()["detail"]
    assert replay.headers["www-authenticate"].startswith("Bearer")
    # ... and the legitimate successor in that family is now dead too
    successor = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert successor.status_code == 401
    family = claims_of(first["refresh_token"])["fam"]
    alive = await pg.fetchval("SELECT count(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL", family)
    assert alive == 0
    # the other device's session is untouched
    other = await client.post("/auth/refresh", json={"refresh_token": other_session["refresh_token"]})
    assert other.status_code == 200


async def test_concurrent_refresh_with_one_token_lets_exactly_one_win(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    pair = (await login(client, email)).json()
    results = await asyncio.gather(
        *(client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}) for _ in range(4))
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 1 and set(codes) == {200, 401}, codes


async def test_token_types_are_not_interchangeable(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    pair = (await login(client, email)).json()
    as_access = await client.get("/auth/me", headers=bearer(pair["refresh_token"]))
    assert as_access.status_code == 401 and "token type" in as_access.json()["detail"]
    as_refresh = await client.post("/auth/refresh", json={"refresh_token": pair["access_token"]})
    assert as_refresh.status_code == 401 and "token type" in as_refresh.json()["detail"]
    logout_with_access = await client.post("/auth/logout", json={"refresh_token": pair["access_token"]})
    assert logout_with_access.status_code == 401


async def test_me_refuses_missing_and_forged_tokens(client: httpx.AsyncClient) -> None:
    missing = await client.get("/auth/me")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    forged = await client.get("/auth/me", headers=bearer("eyJhbGciOiJub25lIn0.e30."))
    assert forged.status_code == 401
    basic = await client.get("/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


async def test_deleted_user_cannot_use_me_or_refresh(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    email = new_email()
    await register(client, email)
    pair = (await login(client, email)).json()
    await pg.execute("DELETE FROM users WHERE email = $1", email)
    assert (await client.get("/auth/me", headers=bearer(pair["access_token"]))).status_code == 401
    assert (await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401


# -- login failures reveal nothing -----------------------------------------------------------------
async def test_wrong_password_and_unknown_user_look_the_same(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    wrong = await login(client, email, "not the right password")
    unknown = await login(client, new_email("nobody"), "not the right password")
    assert wrong.status_code == unknown.status_code == 400  # RFC 6749: invalid_grant
    assert (
        wrong.json() == unknown.json() == {"error": "invalid_grant", "error_description": "incorrect email or password"}
    )
    assert dict(wrong.headers).keys() == dict(unknown.headers).keys()


async def test_registration_rules(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    email = new_email()
    assert (await register(client, email)).status_code == 201
    before = await user_count(pg)
    duplicate = await register(client, email.upper(), "another fine passphrase")
    assert duplicate.status_code == 409 and duplicate.json()["detail"] == "email already registered"
    admin = await register(client, new_email(), role="admin")
    assert admin.status_code == 422
    viewer = await register(client, new_email(), role="viewer")
    assert viewer.status_code == 422
    common = await register(client, new_email(), "password123")
    assert common.status_code == 422 and "too common" in common.text
    short = await register(client, new_email(), "short")
    assert short.status_code == 422
    extra = await client.post(
        "/auth/register", json={"email": new_email(), "password": PASSWORD, "role": "rider", "is_admin": True}
    )
    assert extra.status_code == 422
    assert await user_count(pg) == before


# -- bad input: always 4xx with a reason, never 500, never a partial row ------------------------------
BAD_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("/auth/register", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("/auth/register", {"content": b"", "headers": {"content-type": "application/json"}}),
    ("/auth/register", {"content": b"[]", "headers": {"content-type": "application/json"}}),
    ("/auth/register", {"content": b"\xff\xfe\xfd", "headers": {"content-type": "application/json"}}),
    ("/auth/register", {"content": b'{"email": null, "password": 5}', "headers": {"content-type": "application/json"}}),
    ("/auth/register", {"data": {"email": "x@example.com", "password": PASSWORD}}),
    ("/auth/token", {"json": {"username": "x@example.com", "password": PASSWORD}}),
    (
        "/auth/token",
        {"content": b"username=%ZZ&password", "headers": {"content-type": "application/x-www-form-urlencoded"}},
    ),
    ("/auth/token", {"data": {"username": "x@example.com"}}),
    ("/auth/refresh", {"content": b'{"refresh_token": ', "headers": {"content-type": "application/json"}}),
    ("/auth/refresh", {"json": {"refresh_token": ""}}),
    ("/auth/refresh", {"json": {"refresh_token": "'; DROP TABLE refresh_tokens; --"}}),
    ("/auth/logout", {"json": {}}),
    ("/auth/exchange", {"json": {"code": 12}}),
    ("/auth/exchange", {"json": {"code": "' OR '1'='1"}}),
]


@pytest.mark.parametrize(("path", "request_kwargs"), BAD_BODIES)
async def test_malformed_requests_get_4xx_with_a_reason(
    client: httpx.AsyncClient, pg: asyncpg.Connection, path: str, request_kwargs: dict[str, Any]
) -> None:
    before = await user_count(pg)
    response = await client.post(path, **request_kwargs)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    if path == "/auth/token":  # the token endpoint answers as RFC 6749 says
        assert body["error"] == "invalid_request" and body["error_description"]
    else:
        assert body["detail"]
    assert await user_count(pg) == before


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign.example.com",
        "two@@example.com",
        "spaces in@example.com",
        "nul\x00byte@example.com",
        "tab\t@example.com",
        "newline@example.com\n",
        "x@localhost",
        "' OR 1=1 --@example.com",
        "a" * 65 + "@example.com",
        "b@" + "c" * 250 + ".com",
        "",
    ],
)
async def test_bad_emails_are_refused_without_a_row(
    client: httpx.AsyncClient, pg: asyncpg.Connection, email: str
) -> None:
    before = await user_count(pg)
    response = await register(client, email)
    assert response.status_code == 422, response.text
    assert await user_count(pg) == before


async def test_lone_surrogates_in_json_are_refused(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    before = await user_count(pg)
    for body in (
        '{"email": "sur\\ud800@example.com", "password": "a perfectly fine passphrase"}',
        '{"email": "ok-surrogate@example.com", "password": "bad \\udfff passphrase"}',
    ):
        response = await client.post("/auth/register", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
    login_response = await client.post(
        "/auth/token",
        content=b"username=x%40example.com&password=p%ED%A0%80p%ED%A0%80p%ED%A0%80",  # surrogates as invalid UTF-8
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert login_response.status_code == 400 and login_response.json()["error"] == "invalid_request"
    assert await user_count(pg) == before


async def test_unicode_and_sql_looking_input_is_stored_literally(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    decomposed = unicodedata.normalize("NFD", f"Åsa-{uuid.uuid4().hex[:6]}@exämple.se")
    sqlish = f"robert');DROP_TABLE_users;--{uuid.uuid4().hex[:6]}@example.com"
    password = "pässwörd 🚕 ' OR '1'='1 \u202e"
    for email in (decomposed, sqlish):
        created = await register(client, email, password)
        assert created.status_code == 201, created.text
        # the NFC, case-folded form logs in; the exact password (no normalisation) is required
        response = await login(client, unicodedata.normalize("NFC", email).upper(), password)
        assert response.status_code == 200, response.text
        assert (await login(client, email, password + " ")).status_code == 400
    assert await pg.fetchval("SELECT to_regclass('users') IS NOT NULL")
    stored = await pg.fetchval(
        "SELECT email FROM users WHERE email = $1", unicodedata.normalize("NFC", decomposed).lower()
    )
    assert stored is not None


async def test_oversized_bodies_get_413(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    before = await user_count(pg)
    big = {"email": new_email(), "password": "x" * 40_000, "role": "rider"}
    response = await client.post("/auth/register", json=big)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"email": "stream@example.com", "password": "'
        for _ in range(40):
            yield b"y" * 1024
        yield b'"}'

    streamed = await client.post("/auth/register", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    form = await client.post("/auth/token", data={"username": "a@example.com", "password": "z" * 40_000})
    assert form.status_code == 413
    assert await user_count(pg) == before


async def test_overlong_password_at_login_is_just_a_failure(client: httpx.AsyncClient) -> None:
    response = await login(client, new_email(), "p" * 5000)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


# -- JWKS, health --------------------------------------------------------------------------------------
async def test_jwks_publishes_public_keys_that_verify_issued_tokens(
    client: httpx.AsyncClient, auth_server: str
) -> None:
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert key["kid"] and key["alg"] in ("RS256", "EdDSA") and key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    email = new_email()
    await register(client, email)
    token = (await login(client, email)).json()["access_token"]
    verifier = TokenVerifier(f"{auth_server}/.well-known/jwks.json")
    principal = await verifier.verify(token)
    assert principal.role == "rider"
    with pytest.raises(InvalidToken):
        await verifier.verify(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True}
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {
        "/auth/register",
        "/auth/token",
        "/auth/revoke",
        "/auth/refresh",
        "/auth/logout",
        "/auth/me",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    } <= set(paths)


# -- login codes (demo map links) ------------------------------------------------------------------------
async def test_login_code_is_admin_only_and_works_once(
    client: httpx.AsyncClient, auth_service: AuthService, pg: asyncpg.Connection
) -> None:
    rider = auth_service.issue_token("rider")
    admin = auth_service.issue_token("admin")
    assert (await client.post("/auth/login-code")).status_code == 401
    forbidden = await client.post("/auth/login-code", headers=bearer(rider))
    assert forbidden.status_code == 403
    created = await client.post("/auth/login-code", headers=bearer(admin), json={"role": "viewer"})
    assert created.status_code == 200, created.text
    code = created.json()["code"]
    assert created.json()["login_url"].endswith(f"/?login={code}")
    assert await pg.fetchval("SELECT count(*) FROM login_codes WHERE code_hash = $1", code) == 0  # stored hashed

    pair = await client.post("/auth/exchange", json={"code": code})
    assert pair.status_code == 200
    assert claims_of(pair.json()["access_token"])["role"] == "viewer"
    me = await client.get("/auth/me", headers=bearer(pair.json()["access_token"]))
    assert me.json()["role"] == "viewer"
    reused = await client.post("/auth/exchange", json={"code": code})
    assert reused.status_code == 401 and reused.json() == {"detail": "invalid, used or expired login code"}
    assert reused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')  # RFC 6750 codes only


async def test_expired_login_code_is_refused(
    client: httpx.AsyncClient, auth_service: AuthService, pg: asyncpg.Connection
) -> None:
    from ridehail.auth.demo import code_hash, create_login_code

    code = auth_service.run(create_login_code(auth_service.state.sessions, "viewer", 60))
    await pg.execute(
        "UPDATE login_codes SET expires_at = now() - interval '1 second' WHERE code_hash = $1", code_hash(code)
    )
    assert (await client.post("/auth/exchange", json={"code": code})).status_code == 401


async def test_demo_viewer_cannot_log_in_with_a_password(client: httpx.AsyncClient, auth_service: AuthService) -> None:
    from ridehail.auth.demo import create_login_code, demo_email

    auth_service.run(create_login_code(auth_service.state.sessions, "viewer", 60))
    for guess in ("!login-code-only", "", "viewer", PASSWORD):
        response = await login(client, demo_email("viewer"), guess)
        assert response.status_code == 400  # invalid_grant, or invalid_request for the empty password
        assert response.json()["error"] == ("invalid_request" if not guess else "invalid_grant")
