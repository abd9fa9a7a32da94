"""Input or infrastructure? The classifier every consumer and edge relies on, fed the exceptions a
real Postgres (through SQLAlchemy + asyncpg, exactly as the services call it) raises."""

from __future__ import annotations

import asyncio
import decimal

import asyncpg
import pytest
from sqlalchemy import text

from ridehail.common.db import make_engine, make_sessionmaker, transaction
from ridehail.common.failures import describe, is_infrastructure_failure, is_input_failure
from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn

pytestmark = pytest.mark.integration


async def _raised(url: str, sql: str, params: dict[str, object]) -> BaseException:
    engine = make_engine(url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await session.execute(text(sql), params)
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{sql} with {params} did not fail")


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT CAST(:x AS text)", {"x": "a\x00b"}),  # NUL byte in a string
        ("SELECT CAST(:x AS bigint)", {"x": 2**70}),  # beyond int64: asyncpg refuses to encode it
        ("SELECT CAST(:x AS int)", {"x": 2**40}),
        ("SELECT CAST(:x AS numeric(10,2))", {"x": 1e300}),  # numeric overflow
        ("SELECT CAST(:x AS jsonb)", {"x": "{not json"}),
        ("SELECT 1 / CAST(:x AS int)", {"x": 0}),
    ],
)
async def test_values_postgres_refuses_are_the_inputs_fault(database_url: str, sql: str, params: dict) -> None:
    exc = await _raised(database_url, sql, params)
    assert not is_infrastructure_failure(exc), describe(exc)
    assert is_input_failure(exc), describe(exc)


async def test_an_unreachable_database_is_infrastructure() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    exc = await _raised(url, "SELECT 1", {})
    assert is_infrastructure_failure(exc), describe(exc)
    assert not is_input_failure(exc)


async def test_a_connection_lost_mid_transaction_is_infrastructure(database_url: str, pg: asyncpg.Connection) -> None:
    engine = make_engine(database_url)
    try:
        with pytest.raises(Exception) as caught:
            async with transaction(make_sessionmaker(engine)) as session:
                pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                await pg.execute("SELECT pg_terminate_backend($1)", pid)
                await asyncio.sleep(0.2)
                await session.execute(text("SELECT 1"))
        assert is_infrastructure_failure(caught.value), describe(caught.value)
    finally:
        await engine.dispose()


async def test_a_raw_asyncpg_connection_refused_is_infrastructure() -> None:
    with pytest.raises(OSError) as caught:
        await asyncpg.connect(to_asyncpg_dsn(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"), timeout=3)
    assert is_infrastructure_failure(caught.value)


def test_python_errors_while_applying_are_the_inputs_fault() -> None:
    for exc in (decimal.InvalidOperation(), ValueError("bad"), KeyError("x"), OverflowError(), AttributeError("a")):
        assert not is_infrastructure_failure(exc)
    for exc in (ConnectionRefusedError(), TimeoutError(), ConnectionResetError(), BrokenPipeError()):
        assert is_infrastructure_failure(exc)
