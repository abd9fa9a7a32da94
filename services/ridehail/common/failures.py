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

The asyncpg and SQLAlchemy types are looked up only in modules already imported: an exception of
theirs cannot exist before they are, and a service without a database (the simulator) does not
load either of them (about 20 MB) just to classify its errors.
"""

from __future__ import annotations

import sys

from confluent_kafka import KafkaException

from ridehail.domain.errors import Unavailable

INFRASTRUCTURE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "40", "XX", "F0"})
INFRASTRUCTURE_SQLSTATES = frozenset({"55P03", "55006"})  # lock not available, object in use
INPUT_SQLSTATE_CLASSES = frozenset({"22", "23"})

_ALWAYS_INFRA: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaException,
    BufferError,  # the producer's local queue is full: the broker is not taking records
    Unavailable,
)
_NONE: tuple[type[BaseException], ...] = ()


def _infra_types() -> tuple[type[BaseException], ...]:
    """Connection-level failure types, those of asyncpg and SQLAlchemy included once imported
    (their ``InterfaceError``: connection closed, released, or in a broken state)."""
    types = list(_ALWAYS_INFRA)
    pg = sys.modules.get("asyncpg")
    if pg is not None:
        types += [
            pg.PostgresConnectionError,
            pg.exceptions.CannotConnectNowError,
            pg.exceptions.OperatorInterventionError,
            pg.InterfaceError,
        ]
    sa = sys.modules.get("sqlalchemy.exc")
    if sa is not None:
        types += [sa.OperationalError, sa.DisconnectionError, sa.TimeoutError, sa.InterfaceError]
    return tuple(types)


def _asyncpg_data_error() -> tuple[type[BaseException], ...]:
    """asyncpg's client-side ``DataError`` (a value it cannot encode), if asyncpg is loaded."""
    pg = sys.modules.get("asyncpg")
    return (pg.exceptions.DataError,) if pg is not None else _NONE


def _sqlalchemy_error() -> tuple[type[BaseException], ...]:
    sa = sys.modules.get("sqlalchemy.exc")
    return (sa.SQLAlchemyError,) if sa is not None else _NONE


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
    data_error, infra = _asyncpg_data_error(), _infra_types()
    for e in _chain(exc):
        if isinstance(e, data_error):
            return False  # asyncpg could not encode a value (e.g. an integer beyond int64)
        if isinstance(e, infra):
            return True
    return False


def is_input_failure(exc: BaseException) -> bool:
    """True when the database refused a value or a constraint (SQLSTATE class 22 or 23)."""
    code = sqlstate(exc)
    if code is not None and code[:2] in INPUT_SQLSTATE_CLASSES:
        return True
    data_error = _asyncpg_data_error()
    return any(isinstance(e, data_error) for e in _chain(exc))


def describe(exc: BaseException, limit: int = 300) -> str:
    """A one-line reason for logs and dead-letter headers (the root database message when there is one)."""
    text = ""
    wrapper = _sqlalchemy_error()
    for e in _chain(exc):
        if getattr(e, "sqlstate", None) and not isinstance(e, wrapper):
            text = str(e)
            break
    if not text:
        text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    first = text.splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:limit]
