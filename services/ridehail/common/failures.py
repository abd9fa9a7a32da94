"""Is it the input, or the infrastructure? One answer for consumers and HTTP edges alike.

A consumer that cannot apply an event must dead-letter that event and go on; a consumer whose
database (or broker) is down must retry the batch and lose nothing. An HTTP edge answers a bad
input with a 4xx and a database outage with a 503. Both decisions hang on the same question,
answered here from the exception chain:

* an SQLSTATE (Postgres' error class, carried by asyncpg and SQLAlchemy's wrappers) decides first:
  connection, resource, operator-intervention, system and transaction-rollback classes (``08``,
  ``53``, ``57``, ``58``, ``40``, ``55P03``, ``XX``) are the infrastructure; data (``22``) and
  integrity (``23``) errors are the input's fault;
* without one, connection-level types are the infrastructure: ``OSError`` (refused, reset, lost),
  ``TimeoutError``, asyncpg's connection and interface errors (but not its client-side
  ``DataError``, a value it cannot encode), SQLAlchemy's ``OperationalError``, ``InterfaceError``,
  ``DisconnectionError`` and pool time-outs, Kafka errors and :class:`~ridehail.domain.errors.Unavailable`;
* anything else (a ``ValueError``, a ``decimal.InvalidOperation``, a bug) is about the event or
  request being applied: it can never succeed by retrying.
"""

from __future__ import annotations

import asyncpg
from confluent_kafka import KafkaException
from sqlalchemy import exc as sa_exc

from ridehail.domain.errors import Unavailable

INFRASTRUCTURE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "40", "XX", "F0"})
INFRASTRUCTURE_SQLSTATES = frozenset({"55P03", "55006"})  # lock not available, object in use
INPUT_SQLSTATE_CLASSES = frozenset({"22", "23"})

_INFRA_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaException,
    BufferError,  # the producer's local queue is full: the broker is not taking records
    Unavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    sa_exc.OperationalError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


def _chain(exc: BaseException, limit: int = 8) -> list[BaseException]:
    """``exc`` and what caused it (``orig``, ``__cause__``, ``__context__``), nearest first."""
    out: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(out) < limit:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        for nxt in (getattr(e, "orig", None), e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return out


def sqlstate(exc: BaseException) -> str | None:
    """The first SQLSTATE found along the exception chain, if any."""
    for e in _chain(exc):
        code = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def is_infrastructure_failure(exc: BaseException) -> bool:
    """True when ``exc`` says a dependency (database, broker, network) failed, not the input."""
    code = sqlstate(exc)
    if code is not None:
        if code[:2] in INPUT_SQLSTATE_CLASSES:
            return False
        if code in INFRASTRUCTURE_SQLSTATES or code[:2] in INFRASTRUCTURE_SQLSTATE_CLASSES:
            return True
    for e in _chain(exc):
        if isinstance(e, asyncpg.exceptions.DataError):
            return False  # asyncpg could not encode a value (e.g. an integer beyond int64)
        if isinstance(e, _INFRA_TYPES):
            return True
        if isinstance(e, asyncpg.InterfaceError | sa_exc.InterfaceError):
            return True  # connection closed, released, or in a broken state
    return False


def is_input_failure(exc: BaseException) -> bool:
    """True when the database refused a value or a constraint (SQLSTATE class 22 or 23)."""
    code = sqlstate(exc)
    if code is not None and code[:2] in INPUT_SQLSTATE_CLASSES:
        return True
    return any(isinstance(e, asyncpg.exceptions.DataError) for e in _chain(exc))


def describe(exc: BaseException, limit: int = 300) -> str:
    """A one-line reason for logs and dead-letter headers (the root database message when there is one)."""
    text = ""
    for e in _chain(exc):
        if getattr(e, "sqlstate", None) and not isinstance(e, sa_exc.SQLAlchemyError):
            text = str(e)
            break
    if not text:
        text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    first = text.splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:limit]
