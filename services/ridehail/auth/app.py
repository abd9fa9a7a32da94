"""The auth service's FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ridehail.auth.oauth_routes import build_metadata_router, build_oauth_router
from ridehail.auth.routes import build_router
from ridehail.auth.settings import AuthSettings
from ridehail.auth.state import AuthState
from ridehail.common.auth_tokens import OAUTH_PATHS
from ridehail.common.bodylimit import BodySizeLimit
from ridehail.common.db import make_engine, make_sessionmaker, ping, wait_for_database
from ridehail.common.health import health_router
from ridehail.common.http_errors import install_error_handlers
from ridehail.common.logging import get_logger
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.common.security_headers import DOCS_CDN, SecurityHeaders

log = get_logger(__name__)

DESCRIPTION = """Accounts and tokens for ridehail, as an OAuth 2.0 authorization server.

Get tokens at the token endpoint `POST /auth/token` (RFC 6749: `grant_type=password` to log in,
`grant_type=refresh_token` to rotate), end a session at `POST /auth/revoke` (RFC 7009); the
metadata is at `/.well-known/oauth-authorization-server` (RFC 8414). Send the access token (an
RFC 9068 JWT) as `Authorization: Bearer <token>`. Every other service verifies tokens offline with
the keys published at `/.well-known/jwks.json`. The OAuth endpoints answer errors as RFC 6749
section 5.2 says (`{"error", "error_description"}`); every other route as `{"detail": reason}`.
"""


def create_app(settings: AuthSettings) -> FastAPI:
    """Build the app; the database is opened (and signing keys ensured) in the lifespan, not here."""
    if not settings.database_url:
        raise ValueError("AuthSettings.database_url must be set (resolve it before create_app)")
    database_url = settings.database_url
    engine_holder: dict[str, AsyncEngine] = {}

    async def initialise(app: FastAPI, engine: AsyncEngine) -> None:
        """Wait for Postgres, then open the read pool and load (or create) the signing keys.

        Runs beside the server, so /healthz and /readyz (503) answer while the database is away."""
        delay = 0.5
        while True:
            read_pool: asyncpg.Pool | None = None
            try:
                await wait_for_database(engine)
                read_pool = await asyncpg.create_pool(
                    to_asyncpg_dsn(database_url), min_size=1, max_size=settings.db_pool_size
                )
                state = await AuthState.start(settings, engine, make_sessionmaker(engine), read_pool)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DBAPIError) as exc:
                if read_pool is not None:
                    await read_pool.close()
                log.warning("auth_start_retry", error=type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            app.state.auth = state
            log.info("auth_ready", kid=state.issuer.key_set.active.kid)
            return

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(database_url, pool_size=settings.db_pool_size)
        engine_holder["engine"] = engine
        starting = asyncio.create_task(initialise(app, engine), name="auth-initialise")
        try:
            yield
        finally:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            state: AuthState | None = getattr(app.state, "auth", None)
            if state is not None:
                await state.close()
                await state.read_pool.close()
            await engine.dispose()

    app = FastAPI(
        title="ridehail auth",
        version="1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
    )

    async def readiness() -> dict[str, bool]:
        engine = engine_holder.get("engine")
        started = getattr(app.state, "auth", None) is not None
        return {"database": started and engine is not None and await ping(engine)}

    install_error_handlers(app)
    app.include_router(build_oauth_router())
    app.include_router(build_metadata_router())
    app.include_router(build_router())
    app.include_router(health_router("auth", readiness))
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, oauth_paths=OAUTH_PATHS)
    app.add_middleware(SecurityHeaders, html_sources={"/docs": {"script": DOCS_CDN, "style": DOCS_CDN}})
    return app
