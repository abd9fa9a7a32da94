"""Account administration used by the command line and tests (admins are never self-registered)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.auth import users
from ridehail.auth.keys import rotate_signing_key
from ridehail.auth.passwords import PasswordHasher, check_password_policy
from ridehail.auth.schemas import normalise_email
from ridehail.common.db import make_engine, make_sessionmaker, transaction
from ridehail.common.models import USER_ROLES


class AccountError(ValueError):
    pass


async def create_user(
    factory: async_sessionmaker[AsyncSession],
    email: str,
    password: str,
    role: str,
    hasher: PasswordHasher | None = None,
) -> str:
    """Create a user of any role; returns its id. Raises AccountError (policy, duplicate, role)."""
    if role not in USER_ROLES:
        raise AccountError(f"role must be one of {', '.join(USER_ROLES)}")
    email = normalise_email(email)
    if "@" not in email or len(email) > 254:
        raise AccountError("not an email address")
    try:
        check_password_policy(password, email)
    except ValueError as exc:
        raise AccountError(str(exc)) from None
    password_hash = await asyncio.to_thread((hasher or PasswordHasher()).hash, password)
    async with transaction(factory) as session:
        user = await users.insert_user(session, email, password_hash, role)
    if user is None:
        raise AccountError(f"{email} is already registered")
    return str(user.id)


def run_with_database(database_url: str, work: object) -> object:
    """Run ``work(session_factory)`` (a coroutine function) against ``database_url`` and dispose."""

    async def main() -> object:
        engine = make_engine(database_url, pool_size=1)
        try:
            return await work(make_sessionmaker(engine))  # type: ignore[operator]
        finally:
            await engine.dispose()

    return asyncio.run(main())


def create_user_sync(database_url: str, email: str, password: str, role: str) -> str:
    return str(run_with_database(database_url, lambda f: create_user(f, email, password, role)))


def rotate_key_sync(database_url: str, algorithm: str) -> str:
    return str(run_with_database(database_url, lambda f: rotate_signing_key(f, algorithm)))
