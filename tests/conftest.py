"""Shared fixtures: a real embedded broker and a throw-away Postgres database per test session.

Each pytest process gets its own broker port and its own databases, so parallel runs never meet.
Which Postgres server holds the databases is decided by :mod:`ridehail.harness.scratch`
(``SCRATCH_POSTGRES_URL``, else ``RIDEHAIL_DATABASE_URL``'s server, else 127.0.0.1:5432, else a
throw-away local server started for this session and deleted at its end). Every database a test
creates is dropped again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ridehail.common.broker import start_broker, stop_process
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.common.topics import ensure_topics
from ridehail.harness import scratch

pytest_plugins = [
    "tests.fixtures.auth",
    "tests.fixtures.stack",
    "tests.fixtures.cluster",
    "tests.integration.ws_support",
]


# The session's own databases come from the fixtures below; a RIDEHAIL_DATABASE_URL left in the
# environment must not leak into the services and settings the tests build.
_CONFIGURED_DATABASE_URL = os.environ.pop("RIDEHAIL_DATABASE_URL", None)
if _CONFIGURED_DATABASE_URL and not os.environ.get(scratch.SCRATCH_ENV):
    os.environ[scratch.SCRATCH_ENV] = _CONFIGURED_DATABASE_URL

_server_stack = contextlib.ExitStack()
_admin_dsn: str | None = None


def admin_dsn() -> str:
    """libpq URL of the server that holds this session's databases (started on first use)."""
    global _admin_dsn
    if _admin_dsn is None:
        _admin_dsn = _server_stack.enter_context(scratch.scratch_server())
        os.environ[scratch.SCRATCH_ENV] = _admin_dsn  # helpers that find their own server use this one
    return _admin_dsn


def pytest_sessionfinish() -> None:
    _server_stack.close()  # stops and deletes a server this session started (none otherwise)


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


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """libpq URL of the session's Postgres server, as a superuser (for CREATE DATABASE)."""
    return admin_dsn()


@pytest.fixture(scope="session")
def database_url(postgres_admin: str) -> Iterator[str]:
    """URL of a freshly created and migrated database, dropped after the session."""
    with scratch.scratch_database(postgres_admin, "ridehail_test") as url:
        yield url


@pytest.fixture
def fresh_database_url(postgres_admin: str) -> Iterator[str]:
    """Like ``database_url`` but one per test, for tests that need an empty schema."""
    with scratch.scratch_database(postgres_admin, "ridehail_test") as url:
        yield url


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw asyncpg connection to the session database, for assertions."""
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()
