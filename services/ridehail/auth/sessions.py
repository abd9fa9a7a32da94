"""Login sessions: token pairs, refresh rotation with reuse detection, logout (family revocation).

A login creates a *family* (random id) whose absolute deadline is fixed at login. Each refresh marks
the presented token used and issues a new one in the same family with the same deadline. Presenting
a token that was already used (a stolen copy, or the victim after the thief) revokes the whole family.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.auth.tokens import ANONYMOUS_CLIENT, TokenIssuer
from ridehail.common.logging import get_logger
from ridehail.common.models import RefreshToken, User

log = get_logger(__name__)


@dataclass(frozen=True)
class Pair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


class SessionError(Exception):
    """Refresh refused; ``reason`` is safe to return. ``revoke_family`` asks the caller to commit a revocation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _now() -> datetime:
    return datetime.now(UTC)


async def _issue(
    session: AsyncSession, issuer: TokenIssuer, user: User, family_id: str, family_exp: int, client_id: str
) -> Pair:
    access = issuer.access(str(user.id), user.role, client_id)
    refresh = issuer.refresh(str(user.id), user.role, family_id, family_exp, client_id)
    session.add(
        RefreshToken(
            jti=refresh.jti,
            user_id=user.id,
            family_id=family_id,
            expires_at=datetime.fromtimestamp(family_exp, UTC),
        )
    )
    now = int(_now().timestamp())
    return Pair(access.token, refresh.token, access.exp - now, max(0, family_exp - now))


async def start_session(
    session: AsyncSession, issuer: TokenIssuer, user: User, lifetime_s: int, client_id: str = ANONYMOUS_CLIENT
) -> Pair:
    family_id = uuid.uuid4().hex
    return await _issue(session, issuer, user, family_id, int(_now().timestamp()) + lifetime_s, client_id)


async def revoke_family(session: AsyncSession, family_id: str) -> int:
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=_now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def rotate(session: AsyncSession, issuer: TokenIssuer, jti: str, client_id: str = ANONYMOUS_CLIENT) -> Pair:
    """Use refresh token ``jti`` (already signature-checked, issued to ``client_id``) once. Raises SessionError.

    On reuse the family is revoked in ``session`` before raising: the caller must still commit.
    """
    row = (
        await session.execute(select(RefreshToken).where(RefreshToken.jti == jti).with_for_update())
    ).scalar_one_or_none()
    if row is None:
        raise SessionError("unknown refresh token")
    if row.revoked_at is not None:
        raise SessionError("refresh token revoked")
    if row.used_at is not None:
        revoked = await revoke_family(session, row.family_id)
        log.warning("refresh_token_reuse", family=row.family_id, user_id=str(row.user_id), revoked=revoked)
        raise SessionError("refresh token already used; the session has been revoked")
    if row.expires_at <= _now():
        raise SessionError("refresh token expired")
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        await revoke_family(session, row.family_id)
        raise SessionError("account disabled")
    row.used_at = _now()
    return await _issue(session, issuer, user, row.family_id, int(row.expires_at.timestamp()), client_id)


async def family_of(session: AsyncSession, jti: str) -> str | None:
    return (await session.execute(select(RefreshToken.family_id).where(RefreshToken.jti == jti))).scalar_one_or_none()
