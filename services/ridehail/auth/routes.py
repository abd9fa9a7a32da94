"""The auth REST API: register, token (OAuth2 password flow), refresh, logout, me, JWKS, login codes."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm

from ridehail.auth import users
from ridehail.auth.demo import consume_login_code, create_login_code
from ridehail.auth.passwords import MAX_LENGTH, has_unsafe_characters
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
    normalise_email,
)
from ridehail.auth.sessions import Pair, SessionError, family_of, revoke_family, rotate, start_session
from ridehail.auth.state import AuthState
from ridehail.auth.throttle import retry_after_header
from ridehail.common.auth_deps import require_principal
from ridehail.common.auth_tokens import InvalidToken, Principal
from ridehail.common.db import transaction
from ridehail.common.logging import get_logger
from ridehail.common.models import User
from ridehail.domain.errors import Conflict, TooManyRequests, Unauthenticated, Unavailable

log = get_logger(__name__)

BAD_CREDENTIALS = "incorrect email or password"


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
E503: dict[int | str, dict[str, Any]] = {503: _err("Database unavailable", RETRY_AFTER)}


def get_state(request: Request) -> AuthState:
    state: AuthState | None = getattr(request.app.state, "auth", None)
    if state is None:  # still waiting for the database at start-up
        raise Unavailable("database unavailable")
    return state


State = Annotated[AuthState, Depends(get_state)]


def client_address(request: Request, state: AuthState) -> str:
    """The caller's address; X-Forwarded-For is believed only from configured trusted proxies."""
    peer = request.client.host if request.client else "unknown"
    if peer not in state.trusted_proxies:
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in state.trusted_proxies:
            return hop
    return peer


def too_many(seconds: float, reason: str) -> TooManyRequests:
    error = TooManyRequests(reason, seconds)
    error.headers["Retry-After"] = retry_after_header(seconds)
    return error


async def check_password(state: AuthState, email: str, password: str) -> tuple[User | None, str | None]:
    """The active user whose password this is (and a stronger re-hash if one is due), else None.

    Costs one Argon2 verification either way (a dummy one for unknown accounts), through the hash gate."""
    user: User | None = None
    if len(password) <= MAX_LENGTH and not has_unsafe_characters(email + password):
        async with transaction(state.sessions) as session:
            user = await users.by_email(session, email)
    if user is None or not user.is_active:
        await state.hash_gate.run(state.hasher.dummy_verify, password[:MAX_LENGTH])
        return None, None
    ok, new_hash = await state.hash_gate.run(state.hasher.verify_and_update, password, user.password_hash)
    return (user, new_hash) if ok else (None, None)


def _pair(pair: Pair) -> TokenPair:
    return TokenPair(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )


def _user_out(user: User) -> UserOut:
    return UserOut(id=str(user.id), email=user.email, role=user.role, created_at=user.created_at.isoformat())


def _verifier(request: Request) -> Any:
    return get_state(request).verifier


# declares the bearer scheme in OpenAPI (the "Authorize" button in /docs); verification is ours
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)
DeclaredBearer = Annotated[str | None, Depends(oauth2_scheme)]


async def current_principal(request: Request, _: DeclaredBearer) -> Principal:
    """Any valid access token."""
    return await require_principal(lambda: _verifier(request))(request)


async def admin_principal(request: Request, _: DeclaredBearer) -> Principal:
    """A valid access token with role admin."""
    return await require_principal(lambda: _verifier(request), {"admin"})(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]


def build_router() -> APIRouter:
    router = APIRouter(tags=["auth"])

    @router.post(
        "/auth/register",
        status_code=status.HTTP_201_CREATED,
        summary="Create a rider or driver account",
        responses={409: _err("Email already registered"), **E413, **E429, **E503},
    )
    async def register(body: RegisterRequest, request: Request, state: State) -> UserOut:
        wait = state.ip_registrations.hit(client_address(request, state))
        if wait:
            raise too_many(wait, "too many registrations from this address")
        password_hash = await state.hash_gate.run(state.hasher.hash, body.password)
        async with transaction(state.sessions) as session:
            user = await users.insert_user(session, body.email, password_hash, body.role)
        if user is None:
            raise Conflict("email already registered")
        log.info("user_registered", user_id=str(user.id), role=user.role)
        return _user_out(user)

    @router.post(
        "/auth/token",
        summary="Log in (OAuth2 password flow): form fields username (the email) and password",
        responses={**E401, **E413, **E429, **E503},
    )
    async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, state: State) -> TokenPair:
        address = client_address(request, state)
        email = normalise_email(form.username)
        account_wait = state.account_backoff.retry_after(email)
        if account_wait:
            raise too_many(account_wait, "too many failed logins; retry later")
        if email in state.logins_in_flight:
            # one password check per account at a time: parallel guesses cannot outrun the backoff
            raise too_many(1.0, "another login for this account is in progress")
        # the attempt counts against the address before the hash, so parallel guesses cannot outrun
        # the limit; it is given back unless the password turns out wrong
        attempt_at = time.monotonic()
        ip_wait = state.ip_failures.hit(address, attempt_at)
        if ip_wait:
            raise too_many(ip_wait, "too many failed logins; retry later")
        failed = False
        state.logins_in_flight.add(email)
        try:
            user, new_hash = await check_password(state, email, form.password)
            failed = user is None
        finally:
            state.logins_in_flight.discard(email)
            if not failed:
                state.ip_failures.release(address, attempt_at)
        if user is None:
            state.account_backoff.failure(email)
            log.info("login_failed", client=address)
            raise Unauthenticated(BAD_CREDENTIALS, "invalid_grant")
        state.account_backoff.success(email)
        async with transaction(state.sessions) as session:
            if new_hash:
                db_user = await session.get(User, user.id)
                if db_user is not None:
                    db_user.password_hash = new_hash
            pair = await start_session(session, state.issuer, user, state.settings.refresh_token_ttl_s)
        log.info("login", user_id=str(user.id), role=user.role)
        return _pair(pair)

    @router.post(
        "/auth/refresh",
        summary="Exchange a refresh token for a new pair (rotation; reuse revokes the session)",
        responses={**E401, **E413, **E503},
    )
    async def refresh(body: RefreshRequest, state: State) -> TokenPair:
        try:
            principal = state.issuer.verify(body.refresh_token, expected_type="refresh")
        except InvalidToken as exc:
            raise Unauthenticated(exc.reason) from None
        failure: SessionError | None = None
        pair: Pair | None = None
        async with transaction(state.sessions) as session:
            try:
                pair = await rotate(session, state.issuer, principal.jti)
            except SessionError as exc:
                failure = exc  # commit the family revocation, then refuse
        if failure is not None or pair is None:
            raise Unauthenticated(failure.reason if failure else "refresh refused")
        return _pair(pair)

    @router.post(
        "/auth/logout",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        summary="End the session: revoke the refresh token's whole family",
        responses={**E401, **E413, **E503},
    )
    async def logout(body: LogoutRequest, state: State) -> Response:
        try:
            principal = state.issuer.verify(body.refresh_token, expected_type="refresh")
        except InvalidToken as exc:
            raise Unauthenticated(exc.reason) from None
        async with transaction(state.sessions) as session:
            family = await family_of(session, principal.jti)
            if family is not None:
                await revoke_family(session, family)
        if family is None:
            raise Unauthenticated("unknown refresh token")
        log.info("logout", user_id=principal.sub)
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
        responses={**E401, **E413, **E429, **E503},
    )
    async def exchange(body: ExchangeRequest, request: Request, state: State) -> TokenPair:
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
            raise Unauthenticated("invalid, used or expired login code", "invalid_grant")
        return _pair(pair)

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
