"""The ``ridehail users`` commands against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import asyncpg
import httpx
import pytest

from tests.fixtures.auth import serve_auth

pytestmark = pytest.mark.integration


def ridehail(database_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env["RIDEHAIL_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "ridehail.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_create_admin_login_link_and_rotate_key(fresh_database_url: str) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    created = ridehail(
        fresh_database_url, "users", "create-admin", "--email", email, "--password", "admin passphrase 1"
    )
    assert created.returncode == 0, created.stderr
    assert email in created.stdout and "admin passphrase" not in created.stdout + created.stderr

    again = ridehail(fresh_database_url, "users", "create-admin", "--email", email, "--password", "admin passphrase 1")
    assert again.returncode == 1 and "already registered" in again.stderr
    weak = ridehail(fresh_database_url, "users", "create-admin", "--email", "x" + email, "--password", "password")
    assert weak.returncode == 1 and "too short" not in weak.stderr and "common" in weak.stderr

    link = ridehail(fresh_database_url, "users", "login-link")
    assert link.returncode == 0, link.stderr
    url = link.stdout.strip().splitlines()[-1]
    assert "/?login=" in url
    code = url.split("/?login=", 1)[1]

    with serve_auth(fresh_database_url) as service:
        async with httpx.AsyncClient(base_url=service.base_url) as client:
            token = await client.post("/auth/token", data={"username": email, "password": "admin passphrase 1"})
            assert token.status_code == 200
            me = await client.get("/auth/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
            assert me.json()["role"] == "admin"
            exchanged = await client.post("/auth/exchange", json={"code": code})
            assert exchanged.status_code == 200

    conn = await asyncpg.connect(fresh_database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        before = await conn.fetch("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
        rotated = ridehail(fresh_database_url, "users", "rotate-key")
        assert rotated.returncode == 0, rotated.stderr
        after = await conn.fetch("SELECT kid, retired_at FROM signing_keys ORDER BY created_at")
    finally:
        await conn.close()
    assert len(before) == 1
    active = [r["kid"] for r in after if r["retired_at"] is None]
    assert len(active) == 1 and active[0] != before[0]["kid"] and active[0] in rotated.stdout
