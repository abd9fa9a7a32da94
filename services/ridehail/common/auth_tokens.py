"""Offline verification of ridehail access and refresh tokens (JWT, signed by the auth service).

Every service that accepts tokens builds one :class:`TokenVerifier` pointing at the auth service's
JWKS (``/.well-known/jwks.json``). The verifier

- pins the algorithm per key: the key's own ``alg`` from the JWKS (``RS256`` or ``EdDSA``) must equal
  the token header's ``alg``; ``none``, HMAC and any other algorithm are refused before any
  signature work, so the "HS256 signed with the public key" confusion cannot happen;
- checks the signature BEFORE reading the claims, then ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``,
  ``sub``, ``jti``, ``role`` and the token type claim ``typ``; an access token must also say
  ``typ: at+jwt`` in its header (RFC 9068 section 4; tokens issued before carry ``JWT`` and are
  refused with a reason that says so);
- caches the JWKS and refreshes it when a token names an unknown ``kid`` (at most once every
  ``min_refresh_interval_s``) and when the cache is older than ``max_age_s``.

Parsing is strict and done here with ``cryptography`` directly (not PyJWT's decoder), because the
per-token overhead decides how many verifications a core can do (see ``docs/auth.md``).
Errors are :class:`InvalidToken` with a short reason that never contains the token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from ridehail.common.logging import get_logger

log = get_logger(__name__)

ISSUER = "ridehail-auth"
# The OAuth 2.0 endpoints (RFC 6749 token, RFC 7009 revocation): every edge that takes their bodies
# (auth itself, the gateway's proxy) answers errors there in RFC 6749 form.
TOKEN_PATH = "/auth/token"
REVOKE_PATH = "/auth/revoke"
OAUTH_PATHS = frozenset({TOKEN_PATH, REVOKE_PATH})
AUDIENCE = "ridehail"
ROLES = frozenset({"rider", "driver", "admin", "viewer"})
TOKEN_TYPES = frozenset({"access", "refresh"})
# the header "typ" of an access token (RFC 9068 section 2.1; media types compare case-insensitively)
ACCESS_TOKEN_MEDIA_TYPE = "at+jwt"
_ACCESS_TOKEN_MEDIA_TYPES = frozenset({"at+jwt", "application/at+jwt"})
SUPPORTED_ALGORITHMS = frozenset({"RS256", "EdDSA"})
MAX_TOKEN_CHARS = 8192

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


class InvalidToken(Exception):
    """The token is not acceptable. ``reason`` is safe to show and log (it never holds the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    sub: str
    role: str
    jti: str
    exp: int


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: RSAPublicKey | Ed25519PublicKey

    def verify(self, signature: bytes, message: bytes) -> None:
        if isinstance(self.key, RSAPublicKey):
            self.key.verify(signature, message, _PKCS1, _SHA256)
        else:
            self.key.verify(signature, message)


def _b64url_int(value: Any) -> int:
    return int.from_bytes(_b64url_decode(value), "big")


def _b64url_decode(segment: Any) -> bytes:
    if not isinstance(segment, str) or not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise InvalidToken("malformed token")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None


def key_from_jwk(jwk: dict[str, Any]) -> VerificationKey:
    """Build a verification key from one public JWK; refuses private material and unknown types."""
    kid, alg, kty = jwk.get("kid"), jwk.get("alg"), jwk.get("kty")
    if not isinstance(kid, str) or not kid:
        raise ValueError("JWK without kid")
    if "d" in jwk:
        raise ValueError("JWK holds private key material")
    if alg == "RS256" and kty == "RSA":
        n, e = _b64url_int(jwk.get("n")), _b64url_int(jwk.get("e"))
        if n.bit_length() < 2048:
            raise ValueError("RSA key shorter than 2048 bits")
        return VerificationKey(kid, alg, RSAPublicNumbers(e, n).public_key())
    if alg == "EdDSA" and kty == "OKP" and jwk.get("crv") == "Ed25519":
        return VerificationKey(kid, alg, Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk.get("x"))))
    raise ValueError(f"unsupported JWK (kty={kty!r}, alg={alg!r})")


def keys_from_jwks(jwks: Any) -> dict[str, VerificationKey]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("JWKS must be an object with a 'keys' list")
    keys: dict[str, VerificationKey] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        try:
            key = key_from_jwk(jwk)
        except (ValueError, InvalidToken) as exc:
            log.warning("jwks_key_skipped", kid=jwk.get("kid"), reason=str(exc))
            continue
        keys[key.kid] = key
    return keys


def _claim_int(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToken(f"missing or invalid {name} claim")
    return value


def _claim_str(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"missing or invalid {name} claim")
    return value


def verify_with_keys(
    token: str,
    keys: dict[str, VerificationKey],
    *,
    expected_type: str = "access",
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    leeway_s: int = 0,
    now: float | None = None,
) -> Principal:
    """Verify ``token`` against ``keys`` (kid -> key). Pure and synchronous; raises InvalidToken."""
    header, claims = _verified_claims(token, keys)
    if claims.get("iss") != issuer:
        raise InvalidToken("wrong issuer")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise InvalidToken("wrong audience")
    current = int(time.time() if now is None else now)
    exp = _claim_int(claims, "exp")
    if current >= exp + leeway_s:
        raise InvalidToken("token expired")
    if _claim_int(claims, "nbf") > current + leeway_s:
        raise InvalidToken("token not yet valid")
    if _claim_int(claims, "iat") > current + leeway_s:
        raise InvalidToken("token issued in the future")
    typ = claims.get("typ")
    if typ != expected_type:
        raise InvalidToken(f"wrong token type (expected {expected_type})")
    if expected_type == "access":
        media_type = header.get("typ")
        if not isinstance(media_type, str) or media_type.lower() not in _ACCESS_TOKEN_MEDIA_TYPES:
            raise InvalidToken("access token without the header typ at+jwt (an older format): refresh or log in again")
    role = _claim_str(claims, "role")
    if role not in ROLES:
        raise InvalidToken("unknown role")
    return Principal(sub=_claim_str(claims, "sub"), role=role, jti=_claim_str(claims, "jti"), exp=exp)


def unverified_kid(token: str) -> str | None:
    """The ``kid`` a token's header names (no trust implied), or None if unreadable."""
    try:
        header = _parse_json(_b64url_decode(token.split(".", 1)[0]))
    except InvalidToken:
        return None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _verified_claims(token: str, keys: dict[str, VerificationKey]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of ``token`` after its signature checked out (claims are not read before that)."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("missing token")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token")
    header = _parse_json(_b64url_decode(parts[0]))
    alg = header.get("alg")
    if alg not in SUPPORTED_ALGORITHMS:
        raise InvalidToken("algorithm not allowed")
    if "crit" in header:
        raise InvalidToken("unsupported critical header")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidToken("missing kid")
    key = keys.get(kid)
    if key is None:
        raise InvalidToken("unknown signing key")
    if key.algorithm != alg:
        raise InvalidToken("algorithm not allowed")
    signature = _b64url_decode(parts[2])
    try:
        key.verify(signature, (parts[0] + "." + parts[1]).encode("ascii"))
    except InvalidSignature:
        raise InvalidToken("bad signature") from None
    return header, _parse_json(_b64url_decode(parts[1]))


class TokenVerifier:
    """Verifies ridehail tokens offline with keys from the auth service's JWKS (cached)."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        *,
        min_refresh_interval_s: float = 10.0,
        max_age_s: float = 300.0,
        leeway_s: int = 0,
        timeout_s: float = 5.0,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.min_refresh_interval_s = min_refresh_interval_s
        self.max_age_s = max_age_s
        self.leeway_s = leeway_s
        self.timeout_s = timeout_s
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[bool] | None = None
        self.fetches = 0

    @property
    def kids(self) -> set[str]:
        return set(self._keys)

    def load_jwks(self, jwks: dict[str, Any]) -> None:
        """Use ``jwks`` (a JWKS document) as the key set, e.g. in-process or in benchmarks."""
        self._keys = keys_from_jwks(jwks)
        self._fetched_at = self._last_attempt = time.monotonic()

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch the JWKS unless the last attempt is under ``min_refresh_interval_s`` old (or force)."""
        async with self._lock:
            now = time.monotonic()
            if not force and self._last_attempt is not None and now - self._last_attempt < self.min_refresh_interval_s:
                return False
            self._last_attempt = now
            import httpx  # only services that fetch a JWKS load it (auth signs, it never fetches)

            try:
                async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                    response = await client.get(self.jwks_url)
                    response.raise_for_status()
                    keys = keys_from_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("jwks_fetch_failed", url=self.jwks_url, error=type(exc).__name__)
                return False
            self._keys = keys
            self._fetched_at = now
            self.fetches += 1
            log.info("jwks_fetched", url=self.jwks_url, kids=sorted(keys))
            return True

    def _is_stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self.max_age_s

    async def verify(self, token: str, *, expected_type: str = "access") -> Principal:
        """Verify ``token``. Fetches the JWKS first if none is cached or the token's kid is unknown;
        a stale cache is refreshed in the background while the cached keys keep serving."""
        if not self._keys:
            await self.refresh()
        elif self._is_stale() and (self._background is None or self._background.done()):
            self._background = asyncio.create_task(self.refresh(), name="jwks-refresh")
        kid = unverified_kid(token) if isinstance(token, str) else None
        if kid is not None and kid not in self._keys:
            await self.refresh()
        return self.verify_sync(token, expected_type=expected_type)

    def verify_sync(self, token: str, *, expected_type: str = "access") -> Principal:
        """Verify with the keys already cached (no network)."""
        return verify_with_keys(
            token,
            self._keys,
            expected_type=expected_type,
            issuer=self.issuer,
            audience=self.audience,
            leeway_s=self.leeway_s,
        )
