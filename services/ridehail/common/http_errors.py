"""One way to answer errors, installed by every HTTP app: domain errors
(:mod:`ridehail.domain.errors`) become ``{"detail": reason}`` with their status; validation errors
a 422 that never echoes the input; a value or constraint the database refuses (SQLSTATE class 22 or
23, told apart by :mod:`ridehail.common.failures`) a 422 or 409 with the reason; an unreachable or
failing database a 503 with ``Retry-After``, never a 500."""

from __future__ import annotations

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ridehail.common.failures import describe, is_infrastructure_failure, is_input_failure, sqlstate
from ridehail.common.logging import get_logger
from ridehail.domain.errors import DomainError

log = get_logger(__name__)

DATABASE_DOWN = "the database is unavailable, retry shortly"


def _safe(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status, headers=headers or None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return error_response(exc.status, exc.reason, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 without echoing inputs (they may hold passwords or text UTF-8 cannot encode)."""
        detail = [
            {
                "loc": [_safe(str(part)) if isinstance(part, str) else part for part in err.get("loc", ())],
                "msg": _safe(str(err.get("msg", "invalid"))),
                "type": _safe(str(err.get("type", "value_error"))),
            }
            for err in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        return _database_answer(exc)

    @app.exception_handler(asyncpg.exceptions.DataError)
    async def database_refused_raw(_: Request, exc: asyncpg.exceptions.DataError) -> JSONResponse:
        return _database_answer(exc)

    @app.exception_handler(SQLAlchemyError)
    async def database_failed(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        return _database_answer(exc)

    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(asyncpg.InterfaceError)
    async def database_raw(_: Request, exc: Exception) -> JSONResponse:
        return _database_answer(exc)

    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    async def database_unreachable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database_unreachable", error=type(exc).__name__)
        return error_response(503, DATABASE_DOWN, {"Retry-After": "1"})


def _database_answer(exc: BaseException) -> JSONResponse:
    """The database refused the input (SQLSTATE 22 data, 23 integrity: the caller's fault, 4xx with
    the reason), or it is away or failing (503 with Retry-After, never a 500)."""
    if is_input_failure(exc):
        code = sqlstate(exc) or "22000"
        reason = describe(exc, 200).split(": ", 1)[-1]
        return error_response(409 if code.startswith("23") else 422, f"refused by the database: {reason}")
    if is_infrastructure_failure(exc):
        log.warning("database_unavailable", error=describe(exc, 120))
    else:
        log.error("database_error", error=describe(exc, 300))
    return error_response(503, DATABASE_DOWN, {"Retry-After": "1"})
