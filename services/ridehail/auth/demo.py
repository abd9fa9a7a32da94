"""One-time login codes: a printed map URL logs a demo viewer in without a password.

Codes are 256-bit random, stored only as their SHA-256 (a fast hash is right for a high-entropy
secret), expire after ``ttl_s`` and are consumed by a single atomic UPDATE, so each works once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.db import make_engine, make_sessionmaker, transaction
from ridehail.common.models import LoginCode, User

DEMO_ROLES = ("viewer", "rider")


def demo_email(role: str) -> str:
    return f"demo-{role}@ridehail.local"


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


async def demo_user_id(session: AsyncSession, role: str) -> uuid.UUID:
    """The demo user for ``role``, created on first use. Its password hash matches no password."""
    email = demo_email(role)
    await session.execute(
        insert(User)
        .values(id=uuid.uuid4(), email=email, password_hash="!login-code-only", role=role)
        .on_conflict_do_nothing(index_elements=[User.email])
    )
    return (await session.execute(select(User.id).where(User.email == email))).scalar_one()


async def create_login_code(
    session_factory: async_sessionmaker[AsyncSession], role: str = "viewer", ttl_s: int = 3600
) -> str:
    """Create a one-time code that logs the demo ``role`` user in (see ``POST /auth/exchange``)."""
    if role not in DEMO_ROLES:
        raise ValueError(f"login codes are for {', '.join(DEMO_ROLES)} only")
    code = secrets.token_urlsafe(32)
    async with transaction(session_factory) as session:
        user_id = await demo_user_id(session, role)
        session.add(
            LoginCode(
                code_hash=code_hash(code),
                user_id=user_id,
                expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s),
            )
        )
    return code


async def consume_login_code(session: AsyncSession, code: str) -> uuid.UUID | None:
    """Mark ``code`` used and return its user id; None if unknown, expired or already used."""
    now = datetime.now(UTC)
    result = await session.execute(
        update(LoginCode)
        .where(LoginCode.code_hash == code_hash(code), LoginCode.used_at.is_(None), LoginCode.expires_at > now)
        .values(used_at=now)
        .returning(LoginCode.user_id)
    )
    return result.scalar_one_or_none()


def create_login_code_sync(database_url: str, role: str = "viewer", ttl_s: int = 3600) -> str:
    """Blocking wrapper for command-line use (``ridehail up``, ``ridehail users login-link``)."""

    async def main() -> str:
        engine = make_engine(database_url, pool_size=1)
        try:
            return await create_login_code(make_sessionmaker(engine), role, ttl_s)
        finally:
            await engine.dispose()

    return asyncio.run(main())
