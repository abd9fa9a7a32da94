"""A local token signer for tests and benchmarks that run without the auth service: Ed25519 access
tokens in the format auth issues, a verifier that trusts them, its JWKS served over HTTP for
processes that verify offline, and one driver token per driver id (the ingest edge's callers)."""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Iterator
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


@contextlib.contextmanager
def serving_jwks(signer: LocalSigner) -> Iterator[str]:
    """Serve ``signer``'s JWKS at ``/.well-known/jwks.json`` on a free local port (a stand-in for
    the auth service, for processes that verify tokens offline: ``RIDEHAIL_AUTH_BASE_URL``).
    Yields the base URL."""
    import http.server
    import threading

    from ridehail.common.ports import free_port

    body = orjson.dumps(signer.jwks)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name=f"jwks-{port}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class DriverTokens:
    """One access token per driver id (role ``driver``, subject the id), signed on first use."""

    def __init__(self, signer: LocalSigner, ttl_s: int = 6 * 3600) -> None:
        self.signer = signer
        self.ttl_s = ttl_s
        self._tokens: dict[str, str] = {}

    def __call__(self, driver_id: str) -> str:
        token = self._tokens.get(driver_id)
        if token is None:
            token = self._tokens[driver_id] = self.signer.token(driver_id, role="driver", ttl_s=self.ttl_s)
        return token
