"""Issuing access and refresh tokens (JWT) with the active signing key.

Access tokens follow the JWT profile of RFC 9068: header ``typ: at+jwt``; claims ``iss``, ``exp``,
``aud``, ``sub``, ``client_id``, ``iat``, ``jti`` (plus ``nbf``, ``role`` and the type claim
``typ: access`` every ridehail verifier checks). Refresh tokens are JWTs too (header ``typ: JWT``,
claim ``typ: refresh``), read only by this service: they also name their session (``fam``) and the
client they were issued to (``client_id``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from ridehail.auth.keys import KeySet
from ridehail.common.auth_tokens import ACCESS_TOKEN_MEDIA_TYPE, AUDIENCE, ISSUER, Principal, verify_with_keys

# the client_id of tokens issued to a client that did not name itself (every client is public:
# nothing authenticates a client_id, it says which program asked and binds its refresh tokens)
ANONYMOUS_CLIENT = "anonymous"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    exp: int


class TokenIssuer:
    """Signs tokens with the current key set; ``key_set`` is swapped when keys are reloaded."""

    def __init__(self, key_set: KeySet, access_ttl_s: int) -> None:
        self.key_set = key_set
        self.access_ttl_s = access_ttl_s

    def _sign(self, claims: dict[str, Any], media_type: str) -> str:
        active = self.key_set.active
        headers = {"kid": active.kid, "typ": media_type}
        return jwt.encode(claims, active.private_key, algorithm=active.algorithm, headers=headers)

    @staticmethod
    def _claims(sub: str, role: str, typ: str, exp: int, jti: str, now: int, client_id: str) -> dict[str, Any]:
        return {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "client_id": client_id,
            "role": role,
            "typ": typ,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": jti,
        }

    def access(self, sub: str, role: str, client_id: str = ANONYMOUS_CLIENT) -> IssuedToken:
        now = int(time.time())
        jti = uuid.uuid4().hex
        exp = now + self.access_ttl_s
        claims = self._claims(sub, role, "access", exp, jti, now, client_id)
        return IssuedToken(self._sign(claims, ACCESS_TOKEN_MEDIA_TYPE), jti, exp)

    def refresh(self, sub: str, role: str, family_id: str, exp: int, client_id: str = ANONYMOUS_CLIENT) -> IssuedToken:
        """A refresh token of ``family_id`` expiring at ``exp`` (the family's absolute deadline)."""
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {**self._claims(sub, role, "refresh", exp, jti, now, client_id), "fam": family_id}
        return IssuedToken(self._sign(claims, "JWT"), jti, exp)

    def verify(self, token: str, expected_type: str = "access") -> Principal:
        return verify_with_keys(token, self.key_set.verification_keys, expected_type=expected_type)

    def verify_refresh(self, token: str) -> tuple[Principal, str]:
        """A verified refresh token's principal and the client it was issued to (InvalidToken if refused).

        Tokens issued before refresh tokens named their client belong to the anonymous client."""
        principal = self.verify(token, expected_type="refresh")
        payload = token.split(".")[1]
        claims = orjson.loads(jwt.utils.base64url_decode(payload))  # verified just above
        client_id = claims.get("client_id")
        return principal, client_id if isinstance(client_id, str) and client_id else ANONYMOUS_CLIENT
