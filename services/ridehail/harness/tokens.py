"""A local token signer for tests and benchmarks that run without the auth service: Ed25519 access
tokens in the format auth issues, and a verifier that trusts them."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import orjson


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalSigner:
    """An Ed25519 key pair that signs access tokens the shared TokenVerifier accepts."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._key = Ed25519PrivateKey.generate()
        self.kid = uuid.uuid4().hex[:12]
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.jwks: dict[str, Any] = {
            "keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": _b64(raw)}]
        }

    def token(self, sub: str, role: str = "rider", ttl_s: int = 3600) -> str:
        from ridehail.common.auth_tokens import AUDIENCE, ISSUER

        now = int(time.time())
        header = {"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid}
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "client_id": "local-signer",
            "role": role,
            "typ": "access",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
        }
        signing_input = _b64(orjson.dumps(header)) + "." + _b64(orjson.dumps(claims))
        return signing_input + "." + _b64(self._key.sign(signing_input.encode()))

    def verifier(self) -> Any:
        from ridehail.common.auth_tokens import TokenVerifier

        v = TokenVerifier("http://127.0.0.1:9/.well-known/jwks.json")
        v.load_jwks(self.jwks)
        return v
