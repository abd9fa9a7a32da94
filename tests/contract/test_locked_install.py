"""The virtualenv is exactly what uv.lock says, and a second install from the lock is identical."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, set[str]]:
    """Locked versions by name; a package can have one version per Python-version fork of the lock."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    out: dict[str, set[str]] = {}
    for package in lock["package"]:
        out.setdefault(_canonical(package["name"]), set()).add(package["version"])
    return out


def _uv() -> str:
    candidate = ROOT / ".tools" / "uv" / "bin" / "uv"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv is missing: run scripts/bootstrap.sh (it installs the pinned uv into .tools/uv)")
    return found


def test_every_installed_distribution_is_the_locked_version() -> None:
    locked = _locked()
    installed = {_canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    assert "ridehail" in installed
    unlocked = sorted(name for name in installed if name not in locked)
    assert not unlocked, f"installed but not in uv.lock: {unlocked}"
    drifted = {name: (v, sorted(locked[name])) for name, v in installed.items() if v not in locked[name]}
    assert not drifted, f"installed version differs from uv.lock (installed, locked): {drifted}"
    for required in ("fastapi", "confluent-kafka", "sqlalchemy", "asyncpg", "websockets", "folium", "ruff"):
        assert required in installed, f"{required} is not installed"


def _freeze(uv: str, venv: Path) -> list[str]:
    out = subprocess.run(
        [uv, "pip", "freeze", "--python", str(venv / "bin" / "python")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return sorted(line for line in out.splitlines() if line.strip())


def test_a_second_install_from_the_lock_is_identical(tmp_path: Path) -> None:
    uv = _uv()
    second = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(second), "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [uv, "sync", "--frozen", "--extra", "dev", "--quiet", "--python", str(ROOT / ".venv" / "bin" / "python")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    first = _freeze(uv, ROOT / ".venv")
    assert len(first) > 50
    assert _freeze(uv, second) == first
