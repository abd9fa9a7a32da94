"""Shared fixtures: a real embedded broker and a throw-away Postgres database per test session.

Each pytest process gets its own broker port and its own database, so parallel runs never meet.
``RIDEHAIL_TEST_ADMIN_URL`` points at a server where databases may be created (default: the
local server at 127.0.0.1:5432 as user postgres).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ridehail.common import migrate
from ridehail.common.broker import start_broker, stop_process
from ridehail.common.topics import ensure_topics

pytest_plugins = ["tests.fixtures.auth", "tests.fixtures.stack"]

ADMIN_URL = os.environ.get("RIDEHAIL_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a fresh embedded broker with every ridehail topic created."""
    port = free_port()
    log = Path(tmp_path_factory.mktemp("broker")) / "tansu.log"
    proc = start_broker(port=port, log_file=log)
    bootstrap = f"127.0.0.1:{port}"
    ensure_topics(bootstrap)
    yield bootstrap
    stop_process(proc)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _db_url(name: str) -> str:
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a freshly created and migrated database, dropped after the session."""
    name = f"ridehail_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_database_url() -> Iterator[str]:
    """Like ``database_url`` but one per test, for tests that need an empty schema."""
    name = f"ridehail_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _db_url(name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw asyncpg connection to the session database, for assertions."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        yield conn
    finally:
        await conn.close()
