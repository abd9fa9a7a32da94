"""Run Alembic migrations programmatically (`ridehail db upgrade`, and `ridehail up` at start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from ridehail.paths import infra_dir


def alembic_config(database_url: str) -> Config:
    ALEMBIC_INI = infra_dir() / "alembic.ini"
    if not ALEMBIC_INI.exists():
        raise FileNotFoundError(f"Alembic config not found at {ALEMBIC_INI}")
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(Path(ALEMBIC_INI).parent / "alembic"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate to ``revision``. Must not run inside a running event loop (env.py uses asyncio.run)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(alembic_config(database_url), revision)
        return
    raise RuntimeError("call upgrade() from a thread without a running event loop")


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
