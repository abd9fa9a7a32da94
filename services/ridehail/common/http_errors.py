"""One way to answer errors, installed by every HTTP app: domain errors
(:mod:`ridehail.domain.errors`) become ``{"detail": reason}`` with their status; validation errors
a 422 that never echoes the input; an unreachable or failing database a 503 with ``Retry-After``,
never a 500."""

from __future__ import annotations

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

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

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(_: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database_unavailable", error=type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return error_response(503, DATABASE_DOWN, {"Retry-After": "1"})

    @app.exception_handler(DBAPIError)
    async def database_refused(_: Request, exc: DBAPIError) -> JSONResponse:
        """The database refused this input (a NUL byte, a number out of range): the caller's fault."""
        if isinstance(exc, DataError | IntegrityError):
            first = str(exc.orig).splitlines()[0][:200] if exc.orig is not None else type(exc).__name__
            return error_response(422 if isinstance(exc, DataError) else 409, f"refused by the database: {first}")
        log.warning("database_error", error=type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return error_response(503, DATABASE_DOWN, {"Retry-After": "1"})

    @app.exception_handler(asyncpg.exceptions.DataError)
    async def database_refused_raw(_: Request, exc: asyncpg.exceptions.DataError) -> JSONResponse:
        return error_response(422, f"refused by the database: {str(exc).splitlines()[0][:200]}")

    @app.exception_handler(SQLAlchemyError)
    async def database_failed(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("database_error", error=type(exc).__name__)
        return error_response(503, DATABASE_DOWN, {"Retry-After": "1"})

    @app.exception_handler(asyncpg.PostgresConnectionError)
    # A server shutting down or still starting: asyncpg raises these outside PostgresConnectionError.
    @app.exception_handler(asyncpg.exceptions.OperatorInterventionError)
    @app.exception_handler(asyncpg.exceptions.CannotConnectNowError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    async def database_unreachable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database_unreachable", error=type(exc).__name__)
        return error_response(503, DATABASE_DOWN, {"Retry-After": "1"})
