"""Everything one auth process holds: database, hasher, signing keys, throttles."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ridehail.auth.hash_gate import HashGate
from ridehail.auth.keys import ensure_signing_key, load_key_set
from ridehail.auth.passwords import PasswordHasher
from ridehail.auth.settings import AuthSettings
from ridehail.auth.throttle import AccountBackoff, WindowLimiter
from ridehail.auth.tokens import TokenIssuer
from ridehail.common.auth_tokens import TokenVerifier
from ridehail.common.logging import get_logger

log = get_logger(__name__)

KEY_RELOAD_INTERVAL_S = 60.0


class KeySetVerifier(TokenVerifier):
    """A TokenVerifier fed from this process's key set instead of over HTTP."""

    def __init__(self, state: AuthState) -> None:
        super().__init__("in-process", min_refresh_interval_s=1.0)
        self._state = state
        self.load_jwks(state.issuer.key_set.jwks)

    async def refresh(self, *, force: bool = False) -> bool:
        del force
        self.load_jwks(self._state.issuer.key_set.jwks)
        return True


@dataclass
class AuthState:
    settings: AuthSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    hasher: PasswordHasher
    hash_gate: HashGate
    issuer: TokenIssuer
    account_backoff: AccountBackoff
    ip_failures: WindowLimiter
    ip_registrations: WindowLimiter
    trusted_proxies: frozenset[str]
    read_pool: asyncpg.Pool
    verifier: TokenVerifier = field(init=False)
    logins_in_flight: set[str] = field(default_factory=set)
    _reloader: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.verifier = KeySetVerifier(self)

    @property
    def max_token_lifetime_s(self) -> int:
        return max(self.settings.access_token_ttl_s, self.settings.refresh_token_ttl_s)

    @classmethod
    async def start(
        cls,
        settings: AuthSettings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        read_pool: asyncpg.Pool,
    ) -> AuthState:
        rotate_after = settings.key_rotation_days * 86400 or None
        await ensure_signing_key(sessions, settings.jwt_algorithm, rotate_after)
        key_set = await load_key_set(sessions, max(settings.access_token_ttl_s, settings.refresh_token_ttl_s))
        state = cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            hasher=PasswordHasher(settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism),
            hash_gate=HashGate(settings.password_hash_concurrency, settings.password_hash_queue),
            issuer=TokenIssuer(key_set, settings.access_token_ttl_s),
            account_backoff=AccountBackoff(
                settings.login_free_failures, settings.login_backoff_base_s, settings.login_backoff_max_s
            ),
            ip_failures=WindowLimiter(settings.ip_attempts_per_minute, 60.0),
            ip_registrations=WindowLimiter(settings.ip_attempts_per_minute, 60.0),
            trusted_proxies=frozenset(p.strip() for p in settings.trusted_proxies.split(",") if p.strip()),
            read_pool=read_pool,
        )
        state._reloader = asyncio.create_task(state._reload_keys_forever(), name="auth-key-reload")
        return state

    async def reload_keys(self) -> None:
        """Rotate if the active key has aged out, then pick up keys created by any auth process."""
        rotate_after = self.settings.key_rotation_days * 86400 or None
        await ensure_signing_key(self.sessions, self.settings.jwt_algorithm, rotate_after)
        self.issuer.key_set = await load_key_set(self.sessions, self.max_token_lifetime_s)
        self.verifier.load_jwks(self.issuer.key_set.jwks)

    async def _reload_keys_forever(self) -> None:
        while True:
            await asyncio.sleep(KEY_RELOAD_INTERVAL_S)
            try:
                await self.reload_keys()
            except Exception as exc:  # keep serving with the keys we have
                log.warning("signing_key_reload_failed", error=type(exc).__name__)

    async def close(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
