"""The auth service as an OAuth 2.0 authorization server, spoken to over plain HTTP: the token
endpoint (RFC 6749: password and refresh_token grants, its error responses, no caching), revocation
(RFC 7009), metadata (RFC 8414) and access tokens as RFC 9068 JWTs. Real server, real Postgres."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fixtures.auth import AuthService, serve_auth
from tests.integration.auth_http import PASSWORD, bearer, claims_of, new_email, register

pytestmark = pytest.mark.integration

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def client(auth_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=auth_server, timeout=30.0) as c:
        yield c


async def token_request(client: httpx.AsyncClient, **params: str) -> httpx.Response:
    return await client.post("/auth/token", data=params)


async def password_grant(client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: str) -> Any:
    response = await token_request(client, grant_type="password", username=email, password=password, **extra)
    assert response.status_code == 200, response.text
    return response.json()


async def new_user(client: httpx.AsyncClient) -> str:
    email = new_email("oauth")
    assert (await register(client, email)).status_code == 201
    return email


def header_of(token: str) -> dict[str, Any]:
    first = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))))


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> str:
    """An RFC 6749 section 5.2 error: the status, a JSON body with ``error`` and a description, not cached."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert response.headers["cache-control"] == "no-store"
    # RFC 6749 appendix A: error_description is %x20-21 / %x23-5B / %x5D-7E (no '"' or '\')
    assert all(0x20 <= ord(ch) <= 0x7E and ch not in '"\\' for ch in body["error_description"])
    return str(body["error_description"])


# -- the token endpoint: grants ----------------------------------------------------------------------
async def test_password_grant_answers_a_token_response_that_is_never_cached(client: httpx.AsyncClient) -> None:
    email = await new_user(client)
    response = await token_request(client, grant_type="password", username=email, password=PASSWORD)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"].lower() == "bearer" and body["expires_in"] > 0
    assert body["access_token"] and body["refresh_token"]
    me = await client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["email"] == email


async def test_refresh_token_grant_rotates_and_detects_reuse(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    email = await new_user(client)
    first = await password_grant(client, email)
    rotated = await token_request(client, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store" and rotated.headers["pragma"] == "no-cache"
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert claims_of(second["refresh_token"])["exp"] == claims_of(first["refresh_token"])["exp"]
    # the used token again: refused, and the whole session with it
    replay = await token_request(client, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert "already used" in assert_oauth_error(replay, 400, "invalid_grant")
    successor = await token_request(client, grant_type="refresh_token", refresh_token=second["refresh_token"])
    assert_oauth_error(successor, 400, "invalid_grant")
    family = claims_of(first["refresh_token"])["fam"]
    alive = await pg.fetchval("SELECT count(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL", family)
    assert alive == 0


async def test_a_refresh_token_stays_with_the_client_it_was_issued_to(client: httpx.AsyncClient) -> None:
    email = await new_user(client)
    pair = await password_grant(client, email, client_id="map-page")
    assert claims_of(pair["access_token"])["client_id"] == "map-page"
    other = await token_request(
        client, grant_type="refresh_token", refresh_token=pair["refresh_token"], client_id="someone-else"
    )
    assert "another client" in assert_oauth_error(other, 400, "invalid_grant")
    same = await token_request(
        client, grant_type="refresh_token", refresh_token=pair["refresh_token"], client_id="map-page"
    )
    assert same.status_code == 200 and claims_of(same.json()["access_token"])["client_id"] == "map-page"


async def test_a_login_without_grant_type_still_works(client: httpx.AsyncClient) -> None:
    """The form every caller sent before (the map page, the simulator's riders): a password grant."""
    email = await new_user(client)
    response = await client.post("/auth/token", data={"username": email, "password": PASSWORD})
    assert response.status_code == 200 and response.json()["access_token"]


# -- the token endpoint: errors (RFC 6749 section 5.2) --------------------------------------------------
async def test_wrong_credentials_are_invalid_grant_and_reveal_nothing(client: httpx.AsyncClient) -> None:
    email = await new_user(client)
    wrong = await token_request(client, grant_type="password", username=email, password="not the right one")
    unknown = await token_request(client, grant_type="password", username=new_email("nobody"), password="not it")
    assert assert_oauth_error(wrong, 400, "invalid_grant") == "incorrect email or password"
    assert wrong.json() == unknown.json()


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x", "redirect_uri": "http://a/"}, "unsupported_grant_type"),
        ({"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}, "unsupported_grant_type"),
        ({"grant_type": "Password", "username": "a@example.com", "password": "whatever"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "a@example.com"}, "invalid_request"),
        ({"grant_type": "password", "password": "whatever"}, "invalid_request"),
        ({"grant_type": "password", "username": "a@example.com", "password": ""}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "not-a-token"}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "a.b.c"}, "invalid_grant"),
        ({"grant_type": "password", "username": "a@example.com", "password": "x" * 300}, "invalid_grant"),
        ({"grant_type": "password", "username": "a@example.com", "password": "pw", "scope": "admin"}, "invalid_scope"),
        (
            {"grant_type": "password", "username": "a@example.com", "password": "pw", "client_id": "a b\x01"},
            "invalid_request",
        ),
        ({}, "invalid_request"),
    ],
)
async def test_bad_token_requests_get_rfc6749_errors(
    client: httpx.AsyncClient, params: dict[str, str], error: str
) -> None:
    assert_oauth_error(await token_request(client, **params), 400, error)


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"json": {"grant_type": "password", "username": "a@example.com", "password": "whatever"}},
        {"content": b"grant_type=password&grant_type=refresh_token&refresh_token=x", "headers": FORM},
        {"content": b"grant_type=password&username=a%40b.c&password=p%ED%A0%80", "headers": FORM},
        {"content": b"grant_type=password&username=a%40b.c&password=\xff\xfe", "headers": FORM},
        {"content": b"grant_type=password&username=nul%00%40example.com&password=x", "headers": FORM},
        {"content": b"", "headers": FORM},
        {"content": b"{not a form", "headers": {"content-type": "text/plain"}},
        {"files": {"grant_type": (None, "password"), "username": (None, "a@b.c"), "password": (None, "x")}},
    ],
)
async def test_malformed_token_requests_are_invalid_request_not_422(
    client: httpx.AsyncClient, request_kwargs: dict[str, Any]
) -> None:
    assert_oauth_error(await client.post("/auth/token", **request_kwargs), 400, "invalid_request")


async def test_client_authentication_attempts_get_401_invalid_client(client: httpx.AsyncClient) -> None:
    """There are no confidential clients: every client is public (``token_endpoint_auth_methods_supported: none``)."""
    email = await new_user(client)
    form = {"grant_type": "password", "username": email, "password": PASSWORD}
    basic = await client.post("/auth/token", data=form, auth=("some-client", "its-secret"))
    assert_oauth_error(basic, 401, "invalid_client")
    assert basic.headers["www-authenticate"].startswith("Basic")
    secret = await client.post("/auth/token", data={**form, "client_id": "c", "client_secret": "s"})
    assert_oauth_error(secret, 401, "invalid_client")
    revoke = await client.post("/auth/revoke", data={"token": "x"}, auth=("some-client", "its-secret"))
    assert_oauth_error(revoke, 401, "invalid_client")


async def test_throttled_and_oversized_token_requests_keep_the_rfc_shape(database_url: str) -> None:
    with serve_auth(database_url, ip_attempts_per_minute=1) as service:
        async with httpx.AsyncClient(base_url=service.base_url) as c:
            form = {"grant_type": "password", "username": new_email(), "password": "wrong password!"}
            assert_oauth_error(await c.post("/auth/token", data=form), 400, "invalid_grant")
            limited = await c.post("/auth/token", data=form)
            assert_oauth_error(limited, 429, "slow_down")
            assert int(limited.headers["retry-after"]) >= 1
            big = await c.post("/auth/token", data={**form, "password": "z" * 40_000})
            assert_oauth_error(big, 413, "invalid_request")
            revoke_big = await c.post("/auth/revoke", data={"token": "z" * 40_000})
            assert_oauth_error(revoke_big, 413, "invalid_request")

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
                yield b"grant_type=password&username=a%40b.c&password="
                for _ in range(40):
                    yield b"y" * 1024

            streamed = await c.post("/auth/token", content=chunks(), headers=FORM)
            assert_oauth_error(streamed, 413, "invalid_request")


async def test_the_database_away_is_503_temporarily_unavailable(database_url: str) -> None:
    from tests.integration.test_dependencies_down import TcpSwitch

    switch = TcpSwitch(database_url)
    switch.up()
    try:
        with serve_auth(switch.database_url) as service:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=30.0) as c:
                email = await new_user(c)
                pair = await password_grant(c, email)
                switch.down()
                try:
                    login = await token_request(c, grant_type="password", username=email, password=PASSWORD)
                    refresh = await token_request(c, grant_type="refresh_token", refresh_token=pair["refresh_token"])
                    revoke = await c.post("/auth/revoke", data={"token": pair["refresh_token"]})
                finally:
                    switch.up()
                for response in (login, refresh, revoke):
                    assert_oauth_error(response, 503, "temporarily_unavailable")
                    assert response.headers["retry-after"] == "1"
                # nothing was counted against the account or the address: the next login just works
                assert (
                    await token_request(c, grant_type="password", username=email, password=PASSWORD)
                ).status_code == 200
    finally:
        switch.down()


# -- revocation (RFC 7009) ---------------------------------------------------------------------------------
async def test_revoking_a_refresh_token_ends_its_session_only(client: httpx.AsyncClient) -> None:
    email = await new_user(client)
    phone = await password_grant(client, email)
    laptop = await password_grant(client, email)
    revoked = await client.post(
        "/auth/revoke", data={"token": phone["refresh_token"], "token_type_hint": "refresh_token"}
    )
    assert revoked.status_code == 200 and revoked.content == b""
    after = await token_request(client, grant_type="refresh_token", refresh_token=phone["refresh_token"])
    assert "revoked" in assert_oauth_error(after, 400, "invalid_grant")
    again = await client.post("/auth/revoke", data={"token": phone["refresh_token"]})  # idempotent
    assert again.status_code == 200
    still = await token_request(client, grant_type="refresh_token", refresh_token=laptop["refresh_token"])
    assert still.status_code == 200


async def test_revocation_of_unknown_tokens_succeeds_and_of_access_tokens_is_unsupported(
    client: httpx.AsyncClient,
) -> None:
    for junk in ("not-a-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30."):
        response = await client.post("/auth/revoke", data={"token": junk})
        assert response.status_code == 200, response.text  # RFC 7009 2.2: invalid tokens are no error
    email = await new_user(client)
    pair = await password_grant(client, email)
    access = await client.post("/auth/revoke", data={"token": pair["access_token"], "token_type_hint": "access_token"})
    assert "expire" in assert_oauth_error(access, 400, "unsupported_token_type")
    assert_oauth_error(await client.post("/auth/revoke", data={}), 400, "invalid_request")
    assert_oauth_error(await client.post("/auth/revoke", json={"token": "x"}), 400, "invalid_request")
    # the refresh token was not touched by any of that
    still = await token_request(client, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert still.status_code == 200


async def test_the_old_json_logout_and_refresh_routes_still_work(client: httpx.AsyncClient) -> None:
    email = await new_user(client)
    pair = await password_grant(client, email)
    refreshed = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.headers["cache-control"] == "no-store"
    out = await client.post("/auth/logout", json={"refresh_token": refreshed.json()["refresh_token"]})
    assert out.status_code == 204
    gone = await token_request(client, grant_type="refresh_token", refresh_token=refreshed.json()["refresh_token"])
    assert_oauth_error(gone, 400, "invalid_grant")


# -- metadata (RFC 8414) and the tokens (RFC 9068) --------------------------------------------------------
async def test_metadata_describes_what_the_server_does(client: httpx.AsyncClient, auth_server: str) -> None:
    response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    meta = response.json()
    assert meta["token_endpoint"] == f"{auth_server}/auth/token"
    assert meta["jwks_uri"] == f"{auth_server}/.well-known/jwks.json"
    assert meta["revocation_endpoint"] == f"{auth_server}/auth/revoke"
    assert set(meta["grant_types_supported"]) == {"password", "refresh_token"}
    assert meta["token_endpoint_auth_methods_supported"] == ["none"]
    assert meta["revocation_endpoint_auth_methods_supported"] == ["none"]
    assert meta["response_types_supported"] == []  # no authorization endpoint
    jwks = (await client.get(meta["jwks_uri"].removeprefix(auth_server))).json()
    email = await new_user(client)
    token = (await password_grant(client, email))["access_token"]
    # the issuer the metadata names is the one every token carries, and its key is in jwks_uri
    assert claims_of(token)["iss"] == meta["issuer"]
    assert header_of(token)["kid"] in {k["kid"] for k in jwks["keys"]}


async def test_metadata_urls_follow_a_trusted_proxy_only(database_url: str) -> None:
    with serve_auth(database_url, trusted_proxies="127.0.0.1") as service:
        async with httpx.AsyncClient(base_url=service.base_url) as c:
            proxied = await c.get(
                "/.well-known/oauth-authorization-server",
                headers={"X-Forwarded-Host": "rides.example.org", "X-Forwarded-Proto": "https"},
            )
            assert proxied.json()["token_endpoint"] == "https://rides.example.org/auth/token"
            bad = await c.get("/.well-known/oauth-authorization-server", headers={"X-Forwarded-Host": "a b/<x>"})
            assert bad.json()["token_endpoint"] == f"{service.base_url}/auth/token"
    with serve_auth(database_url) as service:  # no trusted proxies: forwarded headers are ignored
        async with httpx.AsyncClient(base_url=service.base_url) as c:
            direct = await c.get(
                "/.well-known/oauth-authorization-server", headers={"X-Forwarded-Host": "evil.example"}
            )
            assert direct.json()["token_endpoint"] == f"{service.base_url}/auth/token"


async def test_access_tokens_are_rfc9068_jwts(client: httpx.AsyncClient, auth_service: AuthService) -> None:
    email = await new_user(client)
    pair = await password_grant(client, email)
    assert header_of(pair["access_token"])["typ"] == "at+jwt"
    claims = claims_of(pair["access_token"])
    assert {"iss", "exp", "aud", "sub", "client_id", "iat", "jti"} <= set(claims)
    assert header_of(pair["refresh_token"])["typ"] != "at+jwt"
    # a refresh token is refused where an access token is wanted, and the reverse
    assert (await client.get("/auth/me", headers=bearer(pair["refresh_token"]))).status_code == 401
    wrong = await token_request(client, grant_type="refresh_token", refresh_token=pair["access_token"])
    assert "token type" in assert_oauth_error(wrong, 400, "invalid_grant")
    assert auth_service.state.verifier.verify_sync(pair["access_token"]).sub == claims["sub"]


async def test_tokens_of_the_older_format_refresh_or_fail_with_a_reason(
    client: httpx.AsyncClient, auth_service: AuthService
) -> None:
    """Tokens issued before access tokens were RFC 9068 JWTs: header typ JWT, no client_id claim."""
    import jwt

    email = await new_user(client)
    pair = await password_grant(client, email)
    active = auth_service.state.issuer.key_set.active

    def older(token: str) -> str:  # the same claims, signed as the service signed them before
        claims = {k: v for k, v in claims_of(token).items() if k != "client_id"}
        return jwt.encode(claims, active.private_key, algorithm=active.algorithm, headers={"kid": active.kid})

    old_access, old_refresh = older(pair["access_token"]), older(pair["refresh_token"])
    assert header_of(old_access)["typ"] == "JWT"
    me = await client.get("/auth/me", headers=bearer(old_access))
    assert me.status_code == 401 and "at+jwt" in me.json()["detail"] and "refresh" in me.json()["detail"]
    # its refresh token (same session, no client named) still rotates, into tokens of today's format
    rotated = await token_request(client, grant_type="refresh_token", refresh_token=old_refresh)
    assert rotated.status_code == 200, rotated.text
    assert header_of(rotated.json()["access_token"])["typ"] == "at+jwt"
    assert (await client.get("/auth/me", headers=bearer(rotated.json()["access_token"]))).status_code == 200
