"""The auth REST API besides the OAuth endpoints: register, me, JWKS, login codes, and the JSON
routes ``/auth/refresh`` and ``/auth/logout`` that came before the token and revocation endpoints
(kept for their callers; they answer errors as every other route does, ``{"detail": reason}``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse

from ridehail.auth import users
from ridehail.auth.demo import consume_login_code, create_login_code
from ridehail.auth.deps import AdminPrincipal, CurrentPrincipal, State, client_address
from ridehail.auth.grants import GrantRefused, end_session, refresh_grant
from ridehail.auth.oauth_routes import token_response
from ridehail.auth.schemas import (
    JWKS,
    ErrorOut,
    ExchangeRequest,
    LoginCodeOut,
    LoginCodeRequest,
    LogoutRequest,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    UserOut,
)
from ridehail.auth.sessions import Pair, start_session
from ridehail.auth.throttle import too_many
from ridehail.auth.tokens import ANONYMOUS_CLIENT
from ridehail.common.auth_tokens import InvalidToken
from ridehail.common.db import transaction
from ridehail.common.logging import get_logger
from ridehail.common.models import User
from ridehail.domain.errors import Conflict, Unauthenticated, Unavailable

log = get_logger(__name__)


def _err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorOut, "description": description}
    if headers:
        out["headers"] = headers
    return out


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
BEARER = {"WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}}
E401: dict[int | str, dict[str, Any]] = {401: _err("Missing, invalid or expired credentials", BEARER)}
E403: dict[int | str, dict[str, Any]] = {403: _err("Authenticated, but the role may not do this")}
E413: dict[int | str, dict[str, Any]] = {
    400: _err("Body could not be parsed (e.g. not UTF-8)"),
    413: _err("Request body too large"),
}
E429: dict[int | str, dict[str, Any]] = {429: _err("Too many attempts; retry after the given seconds", RETRY_AFTER)}
E503: dict[int | str, dict[str, Any]] = {
    503: _err("Database unavailable, or too many password checks queued", RETRY_AFTER)
}


def _user_out(user: User) -> UserOut:
    return UserOut(id=str(user.id), email=user.email, role=user.role, created_at=user.created_at.isoformat())


def build_router() -> APIRouter:
    router = APIRouter(tags=["auth"])

    @router.post(
        "/auth/register",
        status_code=status.HTTP_201_CREATED,
        summary="Create a rider or driver account",
        responses={409: _err("Email already registered"), **E413, **E429, **E503},
    )
    async def register(body: RegisterRequest, request: Request, state: State) -> UserOut:
        address, attempt_at = client_address(request, state), time.monotonic()
        wait = state.ip_registrations.hit(address, attempt_at)
        if wait:
            raise too_many(wait, "too many registrations from this address")
        try:
            password_hash = await state.hash_gate.run(state.hasher.hash, body.password)
        except Unavailable:  # refused before any work: it does not count against the address
            state.ip_registrations.release(address, attempt_at)
            raise
        async with transaction(state.sessions) as session:
            user = await users.insert_user(session, body.email, password_hash, body.role)
        if user is None:
            raise Conflict("email already registered")
        log.info("user_registered", user_id=str(user.id), role=user.role)
        return _user_out(user)

    @router.post(
        "/auth/refresh",
        summary="Exchange a refresh token for a new pair (JSON; as the token endpoint's refresh_token grant)",
        response_model=TokenPair,
        responses={**E401, **E413, **E503},
    )
    async def refresh(body: RefreshRequest, state: State) -> JSONResponse:
        try:
            pair = await refresh_grant(state, body.refresh_token, ANONYMOUS_CLIENT)
        except GrantRefused as exc:
            raise Unauthenticated(exc.reason) from None
        return token_response(pair)

    @router.post(
        "/auth/logout",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        summary="End the session: revoke the refresh token's whole family (JSON; see also /auth/revoke)",
        responses={**E401, **E413, **E503},
    )
    async def logout(body: LogoutRequest, state: State) -> Response:
        try:
            await end_session(state, body.refresh_token)
        except InvalidToken as exc:
            raise Unauthenticated(exc.reason) from None
        except GrantRefused as exc:
            raise Unauthenticated(exc.reason) from None
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/auth/me", summary="The authenticated user", responses={**E401, **E503})
    async def me(principal: CurrentPrincipal, state: State) -> UserOut:
        row = await users.profile(state.read_pool, principal.sub)
        if row is None:
            raise Unauthenticated("account no longer exists")
        return UserOut(
            id=str(row["id"]),
            email=str(row["email"]),
            role=row["role"],
            created_at=row["created_at"].isoformat(),
        )

    @router.post(
        "/auth/login-code",
        summary="Admin: create a one-time login code (and map URL) for a demo viewer or rider",
        responses={**E401, **E403, **E413, **E503},
    )
    async def login_code(
        principal: AdminPrincipal,
        state: State,
        body: LoginCodeRequest | None = None,
    ) -> LoginCodeOut:
        body = body or LoginCodeRequest()
        code = await create_login_code(state.sessions, body.role, body.ttl_s)
        log.info("login_code_created", by=principal.sub, role=body.role)
        url = f"{state.settings.public_gateway_url}/?login={code}"
        return LoginCodeOut(code=code, expires_in=body.ttl_s, login_url=url)

    @router.post(
        "/auth/exchange",
        summary="Exchange a one-time login code for a token pair (each code works once)",
        response_model=TokenPair,
        responses={**E401, **E413, **E429, **E503},
    )
    async def exchange(body: ExchangeRequest, request: Request, state: State) -> JSONResponse:
        address = client_address(request, state)
        attempt_at = time.monotonic()  # counted first, given back on success (as for logins)
        wait = state.ip_failures.hit(address, attempt_at)
        if wait:
            raise too_many(wait, "too many failed attempts; retry later")
        pair: Pair | None = None
        try:
            async with transaction(state.sessions) as session:
                user_id = await consume_login_code(session, body.code)
                user = await session.get(User, user_id) if user_id is not None else None
                if user is not None and user.is_active:
                    pair = await start_session(session, state.issuer, user, state.settings.refresh_token_ttl_s)
        finally:
            if pair is not None:
                state.ip_failures.release(address, attempt_at)
        if pair is None:
            raise Unauthenticated("invalid, used or expired login code")
        return token_response(pair)

    @router.get(
        "/.well-known/jwks.json",
        summary="Public signing keys (JWKS) for offline token verification",
        tags=["keys"],
        responses={**E503},
    )
    async def jwks(state: State, response: Response) -> JWKS:
        response.headers["Cache-Control"] = "public, max-age=60"
        return JWKS.model_validate(state.issuer.key_set.jwks)

    return router
