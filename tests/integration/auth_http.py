"""Helpers of the auth API tests: e-mails, claims, bearer headers, register and login calls."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import asyncpg
import httpx

PASSWORD = "a perfectly fine passphrase"


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD, role: str = "rider") -> Any:
    return await client.post("/auth/register", json={"email": email, "password": password, "role": role})


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/token", data={"username": email, "password": password})


async def user_count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM users"))
