"""Auth service settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ridehail.common.settings import CommonSettings


class AuthSettings(CommonSettings):
    # -- tokens -----------------------------------------------------------------------------------
    jwt_algorithm: Literal["RS256", "EdDSA"] = Field(
        default="RS256",
        description="Signing algorithm for new keys: RS256 (RSA-2048, fastest to verify) or EdDSA (Ed25519).",
    )
    access_token_ttl_s: int = Field(default=900, ge=30, le=86400, description="Access token lifetime in seconds.")
    refresh_token_ttl_s: int = Field(
        default=7 * 86400,
        ge=60,
        le=90 * 86400,
        description="Absolute lifetime of a login session (refresh token family), seconds; rotation never extends it.",
    )
    key_rotation_days: float = Field(
        default=30.0,
        ge=0,
        description="Rotate the signing key when the active one is older than this many days (0: only by command).",
    )
    # -- passwords --------------------------------------------------------------------------------
    argon2_memory_kib: int = Field(
        default=19456, ge=19456, description="Argon2id memory cost in KiB (OWASP minimum 19456)."
    )
    argon2_time_cost: int = Field(default=2, ge=2, description="Argon2id iterations (OWASP minimum 2).")
    argon2_parallelism: int = Field(default=1, ge=1, le=16, description="Argon2id lanes.")
    password_hash_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Password hashes (Argon2id, ~19 MiB and ~16 ms of CPU each) computed at once: about one per core.",
    )
    password_hash_queue: int = Field(
        default=32,
        ge=0,
        le=10_000,
        description="Logins and registrations that may wait for a hash slot; beyond that: 503 with Retry-After.",
    )
    # -- abuse --------------------------------------------------------------------------------------
    login_free_failures: int = Field(
        default=3, ge=0, description="Failed logins per account before the exponential backoff starts."
    )
    login_backoff_base_s: float = Field(
        default=1.0, gt=0, description="First per-account backoff after the free failures (doubles each failure)."
    )
    login_backoff_max_s: float = Field(default=900.0, gt=0, description="Longest per-account login backoff.")
    ip_attempts_per_minute: int = Field(
        default=30,
        ge=1,
        description="Failed logins (and, separately, registrations) allowed per client address per minute.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated proxy addresses whose X-Forwarded-For is believed for the client address.",
    )
    max_body_bytes: int = Field(default=16384, ge=1024, description="Largest request body accepted (else 413).")
    login_code_ttl_s: int = Field(
        default=3600, ge=30, le=86400, description="Lifetime of a one-time login code (demo map links)."
    )
    db_pool_size: int = Field(default=10, ge=1, le=100, description="Auth service database pool size.")

    @property
    def public_gateway_url(self) -> str:
        """The gateway as a browser reaches it (for printed login links)."""
        return (self.gateway_base_url or f"http://{self.public_host}:{self.gateway_port}").rstrip("/")
