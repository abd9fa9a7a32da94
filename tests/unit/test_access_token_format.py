"""Access tokens are RFC 9068 JWT access tokens: the header typ at+jwt (checked by every verifier,
case-insensitively, with a reason naming it when missing) and the claims section 2.2 requires."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from ridehail.auth.keys import KeySet
from ridehail.auth.tokens import TokenIssuer
from ridehail.common.auth_tokens import verify_with_keys
from tests.unit.token_support import claims, make_key_set, refused, sign


@pytest.fixture(scope="module")
def key_set() -> KeySet:
    return make_key_set("RS256")


@pytest.fixture(scope="module")
def issuer(key_set: KeySet) -> TokenIssuer:
    return TokenIssuer(key_set, access_ttl_s=900)


def test_access_tokens_are_rfc9068_jwts_and_refresh_tokens_are_not(issuer: TokenIssuer) -> None:
    access = issuer.access("user-1", "rider", client_id="map-page").token
    assert jwt.get_unverified_header(access)["typ"] == "at+jwt"
    body = jwt.decode(access, options={"verify_signature": False})
    # RFC 9068 section 2.2: iss, exp, aud, sub, client_id, iat, jti
    assert {"iss", "exp", "aud", "sub", "client_id", "iat", "jti"} <= set(body) and body["client_id"] == "map-page"
    assert jwt.decode(issuer.access("u", "rider").token, options={"verify_signature": False})["client_id"]
    refresh = issuer.refresh("user-1", "rider", "family-1", int(time.time()) + 60, client_id="map-page").token
    assert jwt.get_unverified_header(refresh)["typ"] != "at+jwt"
    assert jwt.decode(refresh, options={"verify_signature": False})["client_id"] == "map-page"


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"])
def test_access_token_media_types_are_case_insensitive(key_set: KeySet, typ: str) -> None:
    token = sign(key_set, claims(), typ=typ)
    assert verify_with_keys(token, key_set.verification_keys).role == "rider"


@pytest.mark.parametrize("typ", ["JWT", None, "jwt", "dpop+jwt", "application/jwt", 7, ["at+jwt"]])
def test_access_token_without_the_at_jwt_type_is_refused_with_a_reason(key_set: KeySet, typ: Any) -> None:
    token = sign(key_set, claims(), typ=typ)
    assert jwt.get_unverified_header(token).get("typ") == typ  # None: no typ header at all
    reason = refused(token, key_set)
    assert "at+jwt" in reason, reason
