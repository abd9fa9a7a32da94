"""Throw-away infrastructure for the tests and the benchmarks: free ports, a private embedded
broker, a Postgres server and databases that are dropped afterwards.

Which Postgres server holds the throw-away databases, first match wins:

1. ``SCRATCH_POSTGRES_URL``: any libpq URL of a server where databases may be created (the test
   command sets it to the server it started, so every layer shares one);
2. ``RIDEHAIL_DATABASE_URL``: the server the stack is configured to use;
3. a server answering on 127.0.0.1:5432 as user ``postgres``;
4. otherwise a throw-away local server (:mod:`ridehail.common.local_postgres`), stopped and
   deleted when the block ends.

``SCRATCH_POSTGRES_URL`` deliberately lacks the ``RIDEHAIL_`` prefix: it belongs to the harness,
not to the product, whose strict settings check refuses unknown ``RIDEHAIL_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from ridehail.common.local_postgres import throwaway_server
from ridehail.common.ports import free_port
from ridehail.common.postgres import LOCAL_ADMIN_DSN, to_asyncpg_dsn, to_sqlalchemy_url

SCRATCH_ENV = "SCRATCH_POSTGRES_URL"


async def _answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def configured_admin_dsn() -> str | None:
    """The admin DSN from the environment or the local server on 5432, or None (start one)."""
    for name in (SCRATCH_ENV, "RIDEHAIL_DATABASE_URL"):
        value = os.environ.get(name)
        if value:
            return to_asyncpg_dsn(to_sqlalchemy_url(value))
    if asyncio.run(_answers(LOCAL_ADMIN_DSN)):
        return LOCAL_ADMIN_DSN
    return None


@contextlib.contextmanager
def scratch_server() -> Iterator[str]:
    """Admin DSN of a server for throw-away databases (see the module docstring for which)."""
    configured = configured_admin_dsn()
    if configured is not None:
        yield configured
        return
    with throwaway_server() as dsn:
        yield dsn


def database_url(admin_dsn: str, name: str) -> str:
    """SQLAlchemy URL of database ``name`` on the admin DSN's server (TCP or Unix socket alike)."""
    url = make_url(to_sqlalchemy_url(admin_dsn)).set(database=name)
    return url.render_as_string(hide_password=False)


def database_name(url: str) -> str:
    name = make_url(to_sqlalchemy_url(url)).database
    if not name:
        raise ValueError(f"no database name in {url!r}")
    return name


async def admin_execute(admin_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(admin_dsn: str, prefix: str = "ridehail_tmp", migrate: bool = True) -> str:
    """Create (and migrate) a new database; return its SQLAlchemy URL."""
    from ridehail.common import migrate as migrations

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_execute(admin_dsn, f'CREATE DATABASE "{name}"'))
    url = database_url(admin_dsn, name)
    if migrate:
        try:
            migrations.upgrade(url)
        except BaseException:
            drop_database(admin_dsn, url)
            raise
    return url


def drop_database(admin_dsn: str, url: str) -> None:
    asyncio.run(admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)'))


@contextlib.contextmanager
def scratch_database(admin_dsn: str, prefix: str = "ridehail_tmp", migrate: bool = True) -> Iterator[str]:
    """A new (migrated) database on the admin DSN's server, dropped on exit; yields its URL."""
    url = create_database(admin_dsn, prefix, migrate)
    try:
        yield url
    finally:
        drop_database(admin_dsn, url)


@contextlib.contextmanager
def temporary_database(admin_dsn: str | None = None, prefix: str = "ridehail_tmp") -> Iterator[str]:
    """A migrated throw-away database on the given server, or on the scratch server when None."""
    if admin_dsn is not None:
        with scratch_database(admin_dsn, prefix) as url:
            yield url
        return
    with scratch_server() as dsn, scratch_database(dsn, prefix) as url:
        yield url


@contextlib.contextmanager
def private_broker() -> Iterator[str]:
    """A fresh embedded broker (memory storage) with every ridehail topic; yields its bootstrap."""
    from ridehail.common.broker import start_broker, stop_process
    from ridehail.common.topics import ensure_topics

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ridehail-broker-") as folder:
        proc = start_broker(port=port, log_file=Path(folder) / "tansu.log")
        try:
            bootstrap = f"127.0.0.1:{port}"
            ensure_topics(bootstrap)
            yield bootstrap
        finally:
            stop_process(proc)
