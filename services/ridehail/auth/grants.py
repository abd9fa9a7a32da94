"""The ways to get tokens and to end a session, whichever route asks: the OAuth token endpoint
(``grant_type=password`` / ``refresh_token``), the revocation endpoint, and the older JSON routes
``/auth/refresh`` and ``/auth/logout``. Each route words the refusals its own way.

A password check is throttled before it costs anything: per account (backoff, one check at a
time) and per address (the attempt takes its place in the window first and gives it back on
success), then it waits for a slot of the hash gate.
"""

from __future__ import annotations

import time

from ridehail.auth import users
from ridehail.auth.passwords import MAX_LENGTH, has_unsafe_characters
from ridehail.auth.schemas import normalise_email
from ridehail.auth.sessions import Pair, SessionError, family_of, revoke_family, rotate, start_session
from ridehail.auth.state import AuthState
from ridehail.auth.throttle import too_many
from ridehail.common.auth_tokens import InvalidToken
from ridehail.common.db import transaction
from ridehail.common.logging import get_logger
from ridehail.common.models import User

log = get_logger(__name__)

BAD_CREDENTIALS = "incorrect email or password"


class GrantRefused(Exception):
    """The credentials do not give tokens; ``reason`` is safe to tell the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


async def password_grant(state: AuthState, address: str, username: str, password: str, client_id: str) -> Pair:
    """Log in: a new session's pair. GrantRefused, or TooManyRequests / Unavailable before any hash."""
    email = normalise_email(username)
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
        user, new_hash = await check_password(state, email, password)
        failed = user is None
    finally:
        state.logins_in_flight.discard(email)
        if not failed:
            state.ip_failures.release(address, attempt_at)
    if user is None:
        state.account_backoff.failure(email)
        log.info("login_failed", client=address)
        raise GrantRefused(BAD_CREDENTIALS)
    state.account_backoff.success(email)
    async with transaction(state.sessions) as session:
        if new_hash:
            db_user = await session.get(User, user.id)
            if db_user is not None:
                db_user.password_hash = new_hash
        pair = await start_session(session, state.issuer, user, state.settings.refresh_token_ttl_s, client_id)
    log.info("login", user_id=str(user.id), role=user.role, client_id=client_id)
    return pair


async def refresh_grant(state: AuthState, refresh_token: str, client_id: str) -> Pair:
    """The next pair of the refresh token's session (rotation; a reused token revokes the session)."""
    try:
        principal, issued_to = state.issuer.verify_refresh(refresh_token)
    except InvalidToken as exc:
        raise GrantRefused(exc.reason) from None
    if issued_to != client_id:
        raise GrantRefused("the refresh token was issued to another client")
    failure: SessionError | None = None
    pair: Pair | None = None
    async with transaction(state.sessions) as session:
        try:
            pair = await rotate(session, state.issuer, principal.jti, issued_to)
        except SessionError as exc:
            failure = exc  # commit the family revocation, then refuse
    if failure is not None or pair is None:
        raise GrantRefused(failure.reason if failure else "refresh refused")
    return pair


async def end_session(state: AuthState, refresh_token: str) -> None:
    """Revoke the whole session (family) of a refresh token. InvalidToken, or GrantRefused if unknown."""
    principal = state.issuer.verify(refresh_token, expected_type="refresh")
    async with transaction(state.sessions) as session:
        family = await family_of(session, principal.jti)
        if family is not None:
            await revoke_family(session, family)
    if family is None:
        raise GrantRefused("unknown refresh token")
    log.info("logout", user_id=principal.sub)
