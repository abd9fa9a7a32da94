"""Helpers of the token tests: key sets, claims, signing any header, and "refused with which reason"."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest

from ridehail.auth.keys import KeySet, SigningMaterial, generate_private_key, public_jwk
from ridehail.common.auth_tokens import InvalidToken, key_from_jwk, verify_with_keys


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_key_set(algorithm: str = "RS256", kid: str | None = None) -> KeySet:
    kid = kid or f"kid-{uuid.uuid4().hex[:8]}"
    private = generate_private_key(algorithm)
    jwk = public_jwk(private, kid, algorithm)
    return KeySet(SigningMaterial(kid, algorithm, private), {"keys": [jwk]}, {kid: key_from_jwk(jwk)})


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "ridehail-auth",
        "aud": "ridehail",
        "sub": str(uuid.uuid4()),
        "role": "rider",
        "typ": "access",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key_set: KeySet, payload: dict[str, Any], **header: Any) -> str:
    """``payload`` signed with ``key_set``'s key; the header says ``typ: at+jwt`` unless told otherwise."""
    active = key_set.active
    headers = {"kid": active.kid, "typ": "at+jwt", **header}
    return jwt.encode(payload, active.private_key, algorithm=active.algorithm, headers=headers)


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


def refused(token: str, key_set: KeySet, expected_type: str = "access") -> str:
    with pytest.raises(InvalidToken) as info:
        verify_with_keys(token, key_set.verification_keys, expected_type=expected_type)
    if token:
        assert token not in str(info.value)
    return info.value.reason
