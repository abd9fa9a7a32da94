"""Signing keys: generated on first start, stored in the ``signing_keys`` table, rotated by age or command.

The active key is the newest one that is not retired. A retired key stays in the JWKS until every
token it signed has expired (the longest token lifetime after its retirement), then it is dropped.
Private keys are stored as PKCS#8 PEM in Postgres (only the auth service's database role needs the
table); the JWKS publishes public parts only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.auth_tokens import VerificationKey, key_from_jwk
from ridehail.common.db import transaction
from ridehail.common.logging import get_logger
from ridehail.common.models import SigningKey

log = get_logger(__name__)

# one advisory lock id for "someone is creating or rotating signing keys"
_KEY_LOCK = 0x52494445_4B455953 & 0x7FFFFFFFFFFFFFFF

PrivateKey = rsa.RSAPrivateKey | Ed25519PrivateKey


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "EdDSA":
        return Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {algorithm!r}")


def public_jwk(private_key: PrivateKey, kid: str, algorithm: str) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
    jwk.update(kid=kid, alg=algorithm, use="sig")
    return jwk


@dataclass(frozen=True)
class SigningMaterial:
    kid: str
    algorithm: str
    private_key: PrivateKey


@dataclass(frozen=True)
class KeySet:
    """What the service signs with (active) and what it publishes/accepts (verification keys)."""

    active: SigningMaterial
    jwks: dict[str, Any]
    verification_keys: dict[str, VerificationKey]


def _new_row(algorithm: str) -> SigningKey:
    private_key = generate_private_key(algorithm)
    kid = f"{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:12]}"
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(kid=kid, algorithm=algorithm, private_pem=pem, public_jwk=public_jwk(private_key, kid, algorithm))


async def _lock(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KEY_LOCK})


async def ensure_signing_key(
    factory: async_sessionmaker[AsyncSession], algorithm: str, rotate_after_s: float | None
) -> str:
    """Create the first key, or rotate if the active one is older than ``rotate_after_s``; return the active kid."""
    async with transaction(factory) as session:
        await _lock(session)
        active = await _active_row(session)
        too_old = (
            active is not None
            and rotate_after_s
            and (datetime.now(UTC) - active.created_at).total_seconds() > rotate_after_s
        )
        if active is not None and not too_old and active.algorithm == algorithm:
            return active.kid
        return await _rotate(session, algorithm, active)


async def rotate_signing_key(factory: async_sessionmaker[AsyncSession], algorithm: str) -> str:
    """Retire the active key (it stays published until its tokens expire) and create a new one."""
    async with transaction(factory) as session:
        await _lock(session)
        return await _rotate(session, algorithm, await _active_row(session))


async def _active_row(session: AsyncSession) -> SigningKey | None:
    result = await session.execute(
        select(SigningKey).where(SigningKey.retired_at.is_(None)).order_by(SigningKey.created_at.desc()).limit(1)
    )
    return result.scalar_one_or_none()


async def _rotate(session: AsyncSession, algorithm: str, active: SigningKey | None) -> str:
    row = _new_row(algorithm)
    if active is not None:
        await session.execute(
            update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=datetime.now(UTC))
        )
    session.add(row)
    await session.flush()
    log.info("signing_key_created", kid=row.kid, algorithm=algorithm, retired=active.kid if active else None)
    return row.kid


async def load_key_set(factory: async_sessionmaker[AsyncSession], max_token_lifetime_s: int) -> KeySet:
    """Read the keys: the active one for signing, plus every key whose tokens may still be alive."""
    horizon = datetime.now(UTC) - timedelta(seconds=max_token_lifetime_s)
    async with transaction(factory) as session:
        await session.execute(
            delete(SigningKey).where(SigningKey.retired_at.is_not(None), SigningKey.retired_at < horizon)
        )
        rows = (await session.execute(select(SigningKey).order_by(SigningKey.created_at.desc()))).scalars().all()
    active_row = next((r for r in rows if r.retired_at is None), None)
    if active_row is None:
        raise RuntimeError("no active signing key (ensure_signing_key was not run)")
    private_key = serialization.load_pem_private_key(active_row.private_pem, password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey | Ed25519PrivateKey):
        raise RuntimeError(f"signing key {active_row.kid} has an unsupported type")
    jwks = {"keys": [dict(r.public_jwk) for r in rows]}
    verification = {r.kid: key_from_jwk(dict(r.public_jwk)) for r in rows}
    return KeySet(
        active=SigningMaterial(active_row.kid, active_row.algorithm, private_key),
        jwks=jwks,
        verification_keys=verification,
    )
