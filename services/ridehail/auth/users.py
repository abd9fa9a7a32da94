"""Users table access (no commits here: callers own the transaction)."""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.common.models import User


async def by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def by_id(session: AsyncSession, user_id: str) -> User | None:
    try:
        key = uuid.UUID(user_id)
    except ValueError:
        return None
    return await session.get(User, key)


async def insert_user(session: AsyncSession, email: str, password_hash: str, role: str) -> User | None:
    """Insert a user; None if the email is taken (no exception, nothing half-written)."""
    stmt = (
        insert(User)
        .values(id=uuid.uuid4(), email=email, password_hash=password_hash, role=role)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


PROFILE_SQL = "SELECT id, email, role, created_at FROM users WHERE id = $1 AND is_active"


async def profile(pool: asyncpg.Pool, user_id: str) -> asyncpg.Record | None:
    """The public fields of an active user: the hot path of /auth/me, on a plain asyncpg pool
    (SQLAlchemy's async session costs ~4x more per statement than asyncpg here)."""
    try:
        key = uuid.UUID(user_id)
    except ValueError:
        return None
    async with pool.acquire() as conn:
        return await conn.fetchrow(PROFILE_SQL, key)
