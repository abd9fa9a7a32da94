"""Settings shared by every service, read from the environment (prefix ``RIDEHAIL_``) or ``.env``.

Every field is documented in ``.env.example``; a test keeps the two in step.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ridehail.catalog import DEFAULT_SHARED_PROCESSES, SETTINGS_MODULES, process_groups
from ridehail.domain.surge import DEFAULT_RESOLUTION


def _default_state_dir() -> Path:
    """``.state`` in the project folder (the working directory when the project files are not found)."""
    from ridehail.paths import ProjectFilesMissing, project_root

    try:
        return project_root() / ".state"
    except ProjectFilesMissing:
        return Path.cwd() / ".state"


class CommonSettings(BaseSettings):
    """Settings every service shares; each service subclasses this with its own fields."""

    model_config = SettingsConfigDict(
        env_prefix="RIDEHAIL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
        validate_default=True,
    )

    # -- infrastructure -------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...). Unset: `ridehail up` starts the embedded broker.",
    )
    broker_port: int = Field(default=9092, ge=1, le=65535, description="Port of the embedded broker.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (postgresql+asyncpg://...). Unset: 127.0.0.1:5432, else embedded Postgres.",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Folder for local state: embedded Postgres data, signing keys, recordings.",
    )

    # -- services ---------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Interface every service binds to.")
    gateway_port: int = Field(default=8000, ge=1, le=65535, description="Gateway HTTP port (map page, API).")
    gateway_ws_port: int = Field(default=8002, ge=1, le=65535, description="Gateway websocket port.")
    auth_port: int = Field(default=8001, ge=1, le=65535, description="Auth service HTTP port.")
    matching_port: int = Field(default=8003, ge=1, le=65535, description="Matching health/metrics port.")
    simulator_port: int = Field(default=8004, ge=1, le=65535, description="Simulator health/metrics port.")
    ingest_port: int = Field(default=8005, ge=1, le=65535, description="Ingestion edge HTTP port (POST /ingest/ping).")
    pricing_port: int = Field(default=8006, ge=1, le=65535, description="Pricing health/metrics port.")
    auth_base_url: str | None = Field(
        default=None, description="Base URL of the auth service (unset: http://HOST:AUTH_PORT)."
    )
    gateway_base_url: str | None = Field(
        default=None, description="Base URL of the gateway (unset: http://HOST:GATEWAY_PORT)."
    )
    matching_base_url: str | None = Field(
        default=None, description="Base URL of the matching service's HTTP port (unset: http://HOST:MATCHING_PORT)."
    )
    public_host: str = Field(
        default="127.0.0.1", description="Host name used in printed URLs and in the map page's links."
    )
    pricing_resolution: int = Field(
        default=DEFAULT_RESOLUTION,
        ge=5,
        le=10,
        description="H3 resolution of surge cells (8: ~0.74 km² each): pricing computes them, the gateway "
        "prices with them and ignores cells of any other resolution.",
    )

    # -- behaviour --------------------------------------------------------------------------------
    driver_presence_ttl_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="A driver whose newest ping is older than this is not present: no candidate, shown offline.",
    )
    shared_processes: str = Field(
        default=DEFAULT_SHARED_PROCESSES,
        description=(
            "Services `ridehail up` runs together in one process: '+' inside a group, ',' between groups"
            " ('none': every service in its own process). They share the interpreter's memory; when one"
            " dies the group is restarted."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["console", "json"] = Field(default="console", description="Log renderer.")

    @field_validator("shared_processes")
    @classmethod
    def _known_groups(cls, value: str) -> str:
        process_groups(value)  # a ValueError names the unknown or repeated service
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix) :]
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a PostgreSQL URL, e.g. postgresql+asyncpg://user@host:5432/db")
        return value

    @property
    def auth_url(self) -> str:
        return (self.auth_base_url or f"http://{self.host}:{self.auth_port}").rstrip("/")

    @property
    def gateway_url(self) -> str:
        return (self.gateway_base_url or f"http://{self.host}:{self.gateway_port}").rstrip("/")

    @property
    def matching_url(self) -> str:
        return (self.matching_base_url or f"http://{self.host}:{self.matching_port}").rstrip("/")

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers to use: the configured Kafka, else the embedded broker's address."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"


SERVICE_SETTINGS_MODULES = SETTINGS_MODULES


class SettingsError(SystemExit):
    """Raised (as a clean exit) when the environment holds an unknown or invalid setting."""


def _all_settings_classes() -> list[type[CommonSettings]]:
    for module in SERVICE_SETTINGS_MODULES:
        importlib.import_module(module)
    found: list[type[CommonSettings]] = [CommonSettings]
    stack = list(CommonSettings.__subclasses__())
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    # A stable order (the list above, then by name), whatever order the modules were imported in.
    modules = list(SERVICE_SETTINGS_MODULES)

    def key(cls: type[CommonSettings]) -> tuple[int, int, str]:
        module = cls.__module__
        rank = modules.index(module) if module in modules else len(modules)
        return (0 if cls is CommonSettings else 1, rank, f"{module}.{cls.__qualname__}")

    return sorted(found, key=key)


def known_setting_names() -> set[str]:
    """Every ``RIDEHAIL_*`` environment variable some service understands."""
    return {"RIDEHAIL_" + name.upper() for cls in _all_settings_classes() for name in cls.model_fields}


def unknown_settings(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    known = known_setting_names()
    return sorted(k for k in env if k.startswith("RIDEHAIL_") and k not in known)


def format_validation_error(exc: ValidationError) -> str:
    lines = ["Invalid ridehail settings:"]
    for err in exc.errors():
        name = "RIDEHAIL_" + "_".join(str(p) for p in err["loc"]).upper()
        lines.append(f"  {name}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment; unknown or invalid settings exit with one clear message."""
    unknown = unknown_settings()
    if unknown:
        raise SettingsError(
            "Unknown ridehail setting(s): " + ", ".join(unknown) + " (every valid one is listed in .env.example)"
        )
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None
