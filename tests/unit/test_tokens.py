"""JWT attack suite and verifier behaviour: every forged, stale or misused token is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import Depends, FastAPI
from httpx import ASGITransport, AsyncClient

from ridehail.auth.keys import KeySet
from ridehail.auth.tokens import TokenIssuer
from ridehail.common.auth_deps import bearer_token, require_principal
from ridehail.common.auth_tokens import (
    InvalidToken,
    Principal,
    TokenVerifier,
    key_from_jwk,
    keys_from_jwks,
    verify_with_keys,
)
from ridehail.common.http_errors import install_error_handlers
from tests.unit.token_support import b64, claims, make_key_set, raw_token, refused, sign


@pytest.fixture(scope="module")
def key_set() -> KeySet:
    return make_key_set("RS256")


@pytest.fixture(scope="module")
def issuer(key_set: KeySet) -> TokenIssuer:
    return TokenIssuer(key_set, access_ttl_s=900)


# -- the happy paths -------------------------------------------------------------------------------
def test_issued_access_token_verifies(issuer: TokenIssuer, key_set: KeySet) -> None:
    issued = issuer.access("user-1", "driver")
    principal = verify_with_keys(issued.token, key_set.verification_keys)
    assert principal == Principal(sub="user-1", role="driver", jti=issued.jti, exp=issued.exp)
    header = jwt.get_unverified_header(issued.token)
    assert header["kid"] == key_set.active.kid and header["alg"] == "RS256"
    body = jwt.decode(issued.token, options={"verify_signature": False})
    assert {"iss", "aud", "sub", "role", "typ", "exp", "iat", "nbf", "jti"} <= set(body)
    assert body["exp"] - body["iat"] == 900


def test_eddsa_keys_work_too() -> None:
    ed = make_key_set("EdDSA")
    token = TokenIssuer(ed, 60).access("u", "admin").token
    assert verify_with_keys(token, ed.verification_keys).role == "admin"
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


# -- the attack suite ------------------------------------------------------------------------------
def test_alg_none_is_refused(key_set: KeySet) -> None:
    for alg in ("none", "None", "NONE"):
        token = raw_token({"alg": alg, "kid": key_set.active.kid, "typ": "JWT"}, claims())
        assert refused(token, key_set) == "algorithm not allowed"


def test_hs256_signed_with_the_public_key_is_refused(key_set: KeySet) -> None:
    public_pem = key_set.active.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": key_set.active.kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(role="admin")).encode())
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert refused(f"{header}.{payload}.{b64(mac)}", key_set) == "algorithm not allowed"
    # the JWK JSON as the HMAC secret fares no better
    jwk_secret = json.dumps(key_set.jwks["keys"][0]).encode()
    mac = hmac.new(jwk_secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert refused(f"{header}.{payload}.{b64(mac)}", key_set) == "algorithm not allowed"


def test_algorithm_must_match_the_keys_own(key_set: KeySet) -> None:
    ed = make_key_set("EdDSA", kid=key_set.active.kid)  # same kid, other algorithm
    token = sign(ed, claims())
    assert refused(token, key_set) == "algorithm not allowed"


def test_unknown_kid_is_refused(key_set: KeySet) -> None:
    other = make_key_set("RS256")
    assert refused(sign(other, claims()), key_set) == "unknown signing key"
    assert refused(sign(key_set, claims(), kid="not-a-kid"), key_set) == "unknown signing key"


def test_missing_kid_is_refused(key_set: KeySet) -> None:
    token = jwt.encode(claims(), key_set.active.private_key, algorithm="RS256")
    assert refused(token, key_set) == "missing kid"


def test_signed_by_another_key_with_our_kid_is_refused(key_set: KeySet) -> None:
    forger = make_key_set("RS256", kid=key_set.active.kid)
    assert refused(sign(forger, claims(role="admin")), key_set) == "bad signature"


def test_expired_token_is_refused(key_set: KeySet) -> None:
    now = int(time.time())
    token = sign(key_set, claims(iat=now - 1000, nbf=now - 1000, exp=now - 1))
    assert refused(token, key_set) == "token expired"


def test_not_yet_valid_token_is_refused(key_set: KeySet) -> None:
    now = int(time.time())
    assert refused(sign(key_set, claims(nbf=now + 600)), key_set) == "token not yet valid"
    assert refused(sign(key_set, claims(iat=now + 600)), key_set) == "token issued in the future"


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": ["a", "b"]}, "wrong audience"),
        ({"iss": "evil-auth"}, "wrong issuer"),
        ({"role": "superuser"}, "unknown role"),
        ({"typ": "id"}, "wrong token type (expected access)"),
    ],
)
def test_wrong_claims_are_refused(key_set: KeySet, override: dict[str, Any], reason: str) -> None:
    assert refused(sign(key_set, claims(**override)), key_set) == reason


@pytest.mark.parametrize("missing", ["iss", "aud", "sub", "role", "typ", "exp", "iat", "nbf", "jti"])
def test_every_claim_is_required(key_set: KeySet, missing: str) -> None:
    payload = claims()
    del payload[missing]
    refused(sign(key_set, payload), key_set)


@pytest.mark.parametrize("bad", [{"exp": "never"}, {"exp": True}, {"sub": ""}, {"jti": 7}, {"nbf": 1.5}])
def test_badly_typed_claims_are_refused(key_set: KeySet, bad: dict[str, Any]) -> None:
    refused(sign(key_set, claims(**bad)), key_set)


def test_tampered_payload_is_refused(issuer: TokenIssuer, key_set: KeySet) -> None:
    token = issuer.access("user-1", "rider").token
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["role"] = "admin"
    forged = f"{header}.{b64(json.dumps(body).encode())}.{signature}"
    assert refused(forged, key_set) == "bad signature"
    # flipping one signature byte fails too
    sig = bytearray(base64.urlsafe_b64decode(signature + "=="))
    sig[0] ^= 1
    assert refused(f"{header}.{payload}.{b64(bytes(sig))}", key_set) == "bad signature"


def test_refresh_token_is_not_an_access_token_and_vice_versa(issuer: TokenIssuer, key_set: KeySet) -> None:
    refresh = issuer.refresh("user-1", "rider", "family-1", int(time.time()) + 3600).token
    access = issuer.access("user-1", "rider").token
    assert refused(refresh, key_set, "access") == "wrong token type (expected access)"
    assert refused(access, key_set, "refresh") == "wrong token type (expected refresh)"
    assert verify_with_keys(refresh, key_set.verification_keys, expected_type="refresh").sub == "user-1"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        "eyJhbGciOiJSUzI1NiJ9..",
        "e30.e30.",
        b64(b"[1,2]") + ".e30.AAAA",
        "x" * 10000,
        "\u00e9\u00e9.\u00e9.\u00e9",
    ],
)
def test_malformed_tokens_are_refused(key_set: KeySet, token: str) -> None:
    refused(token, key_set)


def test_crit_header_is_refused(key_set: KeySet) -> None:
    token = sign(key_set, claims(), crit=["exp"])
    assert refused(token, key_set) == "unsupported critical header"


# -- JWKS handling ---------------------------------------------------------------------------------
def test_jwks_never_accepts_private_or_weak_keys(key_set: KeySet) -> None:
    private_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key_set.active.private_key))
    private_jwk.update(kid="p", alg="RS256")
    with pytest.raises(ValueError, match="private"):
        key_from_jwk(private_jwk)
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(65537, 1024)
    weak_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(weak.public_key()))
    weak_jwk.update(kid="w", alg="RS256")
    symmetric = {"kty": "oct", "k": "c2VjcmV0", "kid": "s", "alg": "HS256"}
    keys = keys_from_jwks({"keys": [weak_jwk, symmetric, private_jwk, *key_set.jwks["keys"]]})
    assert set(keys) == {key_set.active.kid}


class _JwksServer:
    """A real HTTP server publishing a JWKS that the test can change, counting requests."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[_JwksServer]:
    server = _JwksServer()
    yield server
    server.close()


async def test_verifier_fetches_caches_and_refreshes_on_unknown_kid(jwks_server: _JwksServer) -> None:
    old, new, stranger = make_key_set(), make_key_set(), make_key_set()
    jwks_server.jwks = old.jwks
    verifier = TokenVerifier(jwks_server.url, min_refresh_interval_s=0.2)

    assert (await verifier.verify(sign(old, claims()))).role == "rider"
    assert (await verifier.verify(sign(old, claims()))).role == "rider"
    assert jwks_server.requests == 1  # cached

    # rotation: the server now publishes both keys; a token with the new kid triggers one refetch
    await asyncio.sleep(0.3)  # past the refetch rate limit
    jwks_server.jwks = {"keys": old.jwks["keys"] + new.jwks["keys"]}
    assert (await verifier.verify(sign(new, claims(role="admin")))).role == "admin"
    assert jwks_server.requests == 2
    assert verifier.kids == {old.active.kid, new.active.kid}

    # an unknown kid right after a refresh does not hammer the auth service
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await verifier.verify(sign(stranger, claims()))
    assert jwks_server.requests == 2


async def test_verifier_survives_an_unreachable_jwks_endpoint(jwks_server: _JwksServer) -> None:
    key_set = make_key_set()
    url = jwks_server.url
    jwks_server.close()
    verifier = TokenVerifier(url, timeout_s=1.0)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await verifier.verify(sign(key_set, claims()))


def test_verify_sync_uses_only_cached_keys(key_set: KeySet) -> None:
    verifier = TokenVerifier("http://127.0.0.1:9/unused")
    with pytest.raises(InvalidToken):
        verifier.verify_sync(sign(key_set, claims()))
    verifier.load_jwks(key_set.jwks)
    assert verifier.verify_sync(sign(key_set, claims(role="viewer"))).role == "viewer"


# -- the FastAPI dependency ------------------------------------------------------------------------
def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


async def test_require_principal_answers_401_and_403(key_set: KeySet, issuer: TokenIssuer) -> None:
    verifier = TokenVerifier("http://127.0.0.1:9/unused")
    verifier.load_jwks(key_set.jwks)
    app = FastAPI()
    install_error_handlers(app)  # every ridehail app answers domain errors this one way
    riders = require_principal(lambda: verifier, {"rider", "admin"})

    @app.get("/rides")
    async def rides(principal: Principal = Depends(riders)) -> dict[str, str]:
        return {"sub": principal.sub}

    now = int(time.time())
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        missing = await client.get("/rides")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        expired = sign(key_set, claims(iat=now - 1000, nbf=now - 1000, exp=now - 10))
        response = await client.get("/rides", headers={"Authorization": f"Bearer {expired}"})
        assert response.status_code == 401 and response.json()["detail"] == "token expired"
        assert expired not in response.text
        assert "invalid_token" in response.headers["www-authenticate"]
        driver = issuer.access("d1", "driver").token
        response = await client.get("/rides", headers={"Authorization": f"Bearer {driver}"})
        assert response.status_code == 403
        refresh = issuer.refresh("r1", "rider", "fam", now + 100).token
        response = await client.get("/rides", headers={"Authorization": f"Bearer {refresh}"})
        assert response.status_code == 401
        rider = issuer.access("r1", "rider").token
        response = await client.get("/rides", headers={"Authorization": f"Bearer {rider}"})
        assert response.status_code == 200 and response.json() == {"sub": "r1"}


async def test_stale_cache_is_refreshed_in_the_background(jwks_server: _JwksServer) -> None:
    old, new = make_key_set(), make_key_set()
    jwks_server.jwks = old.jwks
    verifier = TokenVerifier(jwks_server.url, max_age_s=0.0, min_refresh_interval_s=0.0)
    await verifier.verify(sign(old, claims()))
    assert jwks_server.requests == 1
    jwks_server.jwks = new.jwks  # the old key was dropped upstream
    # served from the stale cache at once; the refresh runs behind it
    assert (await verifier.verify(sign(old, claims()))).role == "rider"
    assert verifier._background is not None
    await verifier._background
    assert jwks_server.requests == 2 and verifier.kids == {new.active.kid}
    with pytest.raises(InvalidToken):
        verifier.verify_sync(sign(old, claims()))
