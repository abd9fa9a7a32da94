"""Issuing access and refresh tokens (JWT) with the active signing key."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from ridehail.auth.keys import KeySet
from ridehail.common.auth_tokens import AUDIENCE, ISSUER, Principal, verify_with_keys


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

    def _sign(self, sub: str, role: str, typ: str, exp: int, jti: str, now: int, extra: dict[str, str]) -> str:
        active = self.key_set.active
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "role": role,
            "typ": typ,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": jti,
            **extra,
        }
        return jwt.encode(claims, active.private_key, algorithm=active.algorithm, headers={"kid": active.kid})

    def access(self, sub: str, role: str) -> IssuedToken:
        now = int(time.time())
        jti = uuid.uuid4().hex
        exp = now + self.access_ttl_s
        return IssuedToken(self._sign(sub, role, "access", exp, jti, now, {}), jti, exp)

    def refresh(self, sub: str, role: str, family_id: str, exp: int) -> IssuedToken:
        """A refresh token of ``family_id`` expiring at ``exp`` (the family's absolute deadline)."""
        now = int(time.time())
        jti = uuid.uuid4().hex
        return IssuedToken(self._sign(sub, role, "refresh", exp, jti, now, {"fam": family_id}), jti, exp)

    def verify(self, token: str, expected_type: str = "access") -> Principal:
        return verify_with_keys(token, self.key_set.verification_keys, expected_type=expected_type)
