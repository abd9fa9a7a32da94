"""The gateway's HTTP side on a real uvicorn server: the map page and its local assets, the road
data, /metrics, the websocket ticket flow end to end, and the auth proxy when auth is down."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from ridehail.common.auth_tokens import TokenVerifier
from ridehail.common.health import make_server
from ridehail.common.ports import free_port
from ridehail.gateway.app import create_app, leaflet_dir
from ridehail.gateway.context import GatewayContext
from ridehail.gateway.hub import Hub
from ridehail.gateway.main import make_hub, start_ws_server
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.ws import LiveSocket
from tests.integration.ws_support import Keys

pytestmark = pytest.mark.integration


@dataclass
class Running:
    http: str
    ws: str
    keys: Keys
    hub: Hub


@pytest.fixture
async def gateway_http() -> AsyncIterator[Running]:
    http_port, ws_port, dead_auth_port = free_port(), free_port(), free_port()
    settings = GatewaySettings(
        gateway_port=http_port,
        gateway_ws_port=ws_port,
        auth_base_url=f"http://127.0.0.1:{dead_auth_port}",
        ws_public_map=False,
    )
    keys = Keys()
    verifier = TokenVerifier("http://127.0.0.1:9/unused")
    verifier.load_jwks(keys.jwks())
    ctx = GatewayContext(settings=settings, session_factory=None, verifier=verifier, producer=None)
    ctx.hub = make_hub(settings)
    live = LiveSocket(ctx.hub, settings, verifier, ctx.tickets)
    ws_server = await start_ws_server(live, settings, "127.0.0.1", ws_port)
    server = make_server(create_app(ctx), "127.0.0.1", http_port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{http_port}", f"ws://127.0.0.1:{ws_port}/", keys, ctx.hub)
    finally:
        server.should_exit = True
        ws_server.close()
        await ws_server.wait_closed()
        await task


async def test_map_page_uses_only_local_assets(gateway_http: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway_http.http) as client:
        page = await client.get("/")
        assert page.status_code == 200
        html = page.text
        assert "OpenStreetMap" in html and "RidehailMap.start" in html
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        loaded = [u for u in urls if not u.startswith("https://www.openstreetmap.org/copyright")]
        assert loaded and all(u.startswith("/static/") for u in loaded), urls
        assert f'"wsPort": {gateway_http.ws.rsplit(":", 1)[1].strip("/")}' in html
        for url in loaded:
            assert (await client.get(url)).status_code == 200, url
        assert leaflet_dir().is_dir()
        roads = await client.get("/static/roads.geojson")
        assert roads.status_code == 200 and roads.json()["type"] == "FeatureCollection"
        metrics = (await client.get("/metrics")).text
        assert "ridehail_gateway_ws_clients" in metrics and "ridehail_gateway_e2e_latency_seconds" in metrics
        assert (await client.get("/healthz")).json()["status"] == "ok"


async def test_ws_ticket_flow(gateway_http: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway_http.http) as client:
        assert (await client.post("/api/ws-ticket")).status_code == 401
        bad = await client.post("/api/ws-ticket", headers={"Authorization": "Bearer not.a.token"})
        assert bad.status_code == 401
        driver = gateway_http.keys.token("driver")
        assert (await client.post("/api/ws-ticket", headers={"Authorization": f"Bearer {driver}"})).status_code == 403
        rider = gateway_http.keys.token("rider")
        r = await client.post("/api/ws-ticket", headers={"Authorization": f"Bearer {rider}"})
        assert r.status_code == 200
        ticket = r.json()["ticket"]
    async with connect(gateway_http.ws) as ws:
        await ws.send(orjson.dumps({"t": "auth", "ticket": ticket}).decode())
        hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["t"] == "hello" and hello["role"] == "rider"
    async with connect(gateway_http.ws) as ws:  # a ticket works once
        await ws.send(orjson.dumps({"t": "auth", "ticket": ticket}).decode())
        with pytest.raises(Exception) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 4401


async def test_auth_proxy_answers_502_when_auth_is_down(gateway_http: Running) -> None:
    async with httpx.AsyncClient(base_url=gateway_http.http) as client:
        r = await client.post("/auth/token", data={"username": "a@b.c", "password": "x"})
        assert r.status_code == 502 and r.json()["detail"] == "auth service unavailable"
        assert (await client.get("/.well-known/jwks.json")).status_code == 502
