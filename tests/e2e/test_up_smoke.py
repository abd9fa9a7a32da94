"""`ridehail up --drivers 50`: map page served, pings in Postgres and >= 50 distinct cars on the
websocket within 30 s, then Ctrl-C stops everything within 10 s and leaves no process behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import orjson
import psutil
import pytest
from websockets.asyncio.client import connect

from ridehail.domain.geo import SERVICE_AREA
from tests.fixtures.stack import RunningStack, drop_database, start_stack, wait_ready

pytestmark = pytest.mark.e2e


async def _drivers_in_db(url: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM drivers"))
    finally:
        await conn.close()


async def _distinct_cars_on_websocket(stack: RunningStack, token: str, want: int, timeout_s: float) -> set[str]:
    seen: set[str] = set()
    b = SERVICE_AREA
    async with connect(stack.ws_url, open_timeout=10) as ws:
        await ws.send(orjson.dumps({"t": "auth", "token": token}).decode())
        await ws.send(orjson.dumps({"t": "sub", "bbox": [b.min_lon, b.min_lat, b.max_lon, b.max_lat]}).decode())
        deadline = time.monotonic() + timeout_s
        while len(seen) < want and time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            msg = orjson.loads(raw)
            if msg.get("t") == "f":
                seen.update(car[0] for car in msg["c"])
    return seen


def test_up_runs_the_whole_stack_and_stops_clean(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, drivers=50)
    try:
        wait_ready(stack, timeout_s=120)
        t0 = time.monotonic()
        children = stack.descendants()
        names = " ".join(" ".join(p.cmdline()) for p in children)
        for service in ("auth", "matching", "pricing", "gateway", "simulator", "tansu"):
            assert service in names, f"{service} is not running under ridehail up"

        page = httpx.get(stack.gateway_url + "/", timeout=10)
        assert page.status_code == 200
        assert "leaflet" in page.text.lower()
        assert "OpenStreetMap" in page.text

        deadline = t0 + 30
        while asyncio.run(_drivers_in_db(stack.database_url)) < 50:
            assert time.monotonic() < deadline, "pings did not reach the drivers table within 30 s"
            time.sleep(0.5)

        code = stack.login_code
        assert code, "ridehail up printed no demo login link"
        tokens = httpx.post(stack.gateway_url + "/auth/exchange", json={"code": code}, timeout=10)
        assert tokens.status_code == 200, tokens.text
        cars = asyncio.run(
            _distinct_cars_on_websocket(stack, tokens.json()["access_token"], 50, deadline - time.monotonic())
        )
        assert len(cars) >= 50, f"only {len(cars)} distinct cars reached the websocket within 30 s"

        # A child that dies is reported loudly and restarted.
        matching = next(p for p in children if "serve matching" in " ".join(p.cmdline()))
        matching.kill()
        deadline = time.monotonic() + 30
        while "matching exited with code -9: restarting it" not in stack.text():
            assert time.monotonic() < deadline, "the death of matching was not reported"
            time.sleep(0.2)
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{stack.port('matching')}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "matching did not come back after its restart"
            time.sleep(0.3)
        children = stack.descendants()

        took = stack.stop(timeout_s=15)
        assert took < 10, f"stopping took {took:.1f}s"
        assert stack.proc.returncode == 0, stack.text()[-3000:]
        time.sleep(0.5)
        alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
        assert "stopped in" in stack.text()
    finally:
        if stack.proc.poll() is None:
            stack.proc.kill()
        for p in stack.descendants():
            p.kill()
        drop_database(stack)


def test_busy_port_fails_fast_naming_the_setting(tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        stack = start_stack(tmp_path, drivers=1, extra_env={"RIDEHAIL_GATEWAY_PORT": str(port)})
        try:
            code = stack.proc.wait(30)
            text = stack.text()
            assert code != 0
            assert str(port) in text and "RIDEHAIL_GATEWAY_PORT" in text
            assert not stack.descendants()
        finally:
            if stack.proc.poll() is None:
                stack.proc.kill()
            drop_database(stack)


def test_unknown_setting_is_refused_at_start(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, drivers=1, extra_env={"RIDEHAIL_DRIVRES": "10"})
    try:
        assert stack.proc.wait(30) != 0
        assert "RIDEHAIL_DRIVRES" in stack.text()
    finally:
        if stack.proc.poll() is None:
            stack.proc.kill()
        drop_database(stack)
