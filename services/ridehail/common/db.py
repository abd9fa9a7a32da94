"""Async engine and session factories (SQLAlchemy 2 + asyncpg). Nothing connects at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ridehail.common.logging import get_logger

log = get_logger(__name__)


def make_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": "ridehail"}},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error. Services never commit themselves."""
    async with factory() as session, session.begin():
        yield session


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def wait_for_database(engine: AsyncEngine, attempts: int | None = None) -> None:
    """Retry with capped exponential backoff until the database answers; one log line per state change."""
    delay, n, warned = 0.2, 0, False
    while True:
        if await ping(engine):
            if warned:
                log.info("database_reachable_again")
            return
        n += 1
        if attempts is not None and n >= attempts:
            raise RuntimeError("database unreachable")
        if not warned:
            log.warning("database_unreachable", retrying=True)
            warned = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
