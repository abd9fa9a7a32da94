"""The gateway's HTTP edge against hostile requests, on a real uvicorn server with the real auth
service behind its proxy: one body limit on every route (declared or chunked, 413 before the body
is read in full), proxied paths normalised and allow-listed (auth's /metrics, /docs and anything
outside /auth and /.well-known stay unreachable however the path is spelled), and security
headers on every response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from ridehail.common.auth_tokens import TokenVerifier
from ridehail.common.health import make_server
from ridehail.common.ports import free_port
from ridehail.gateway.app import create_app
from ridehail.gateway.context import GatewayContext
from ridehail.gateway.main import make_hub
from ridehail.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

LIMIT = 4096


@dataclass
class Edge:
    url: str
    port: int
    app: object


@pytest.fixture
async def edge(auth_server: str) -> AsyncIterator[Edge]:
    port = free_port()
    settings = GatewaySettings(gateway_port=port, auth_base_url=auth_server, gateway_max_body_bytes=LIMIT)
    ctx = GatewayContext(settings=settings, session_factory=None, verifier=TokenVerifier(auth_server), producer=None)
    ctx.hub = make_hub(settings)
    app = create_app(ctx)
    server = make_server(app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield Edge(f"http://127.0.0.1:{port}", port, app)
    finally:
        server.should_exit = True
        await task


async def raw_request(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side path normalisation); (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1 << 20), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


ROUTES = [("POST", "/api/rides"), ("POST", "/api/quotes"), ("POST", "/api/ws-ticket"), ("POST", "/auth/token")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_refuses_a_body_over_the_limit(edge: Edge, method: str, path: str) -> None:
    big = b'{"pad":"' + b"x" * (4 * LIMIT) + b'"}'
    async with httpx.AsyncClient(base_url=edge.url) as client:
        declared = await client.request(method, path, content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413, declared.text
        if path == "/auth/token":  # the OAuth endpoints answer in RFC 6749 form, through the proxy too
            assert declared.json()["error"] == "invalid_request"
            assert "larger than" in declared.json()["error_description"]
            assert declared.headers["cache-control"] == "no-store"
        else:
            assert "larger than" in declared.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 512):
                yield big[i : i + 512]

        chunked = await client.request(method, path, content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413, chunked.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_a_chunked_body_is_not_read_beyond_the_limit(edge: Edge, method: str, path: str) -> None:
    """In process (ASGI), the app asks for body chunks one at a time: count how many it took."""
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(10_000):  # 10 MB if read in full
            pulled += 1
            yield b"x" * 1000

    transport = httpx.ASGITransport(app=edge.app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        r = await client.request(method, path, content=endless(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert pulled * 1000 <= LIMIT + 2000, f"read {pulled} KB of a body limited to {LIMIT} bytes"


HOSTILE_PATHS = [
    b"/auth/%2e%2e/metrics",
    b"/auth/%2E%2E/metrics",
    b"/auth/../metrics",
    b"/auth/..%2fmetrics",
    b"/auth/%2e%2e%2fmetrics",
    b"/auth/token/../../metrics",
    b"/auth/./../metrics",
    b"/auth//metrics",
    b"/auth/%252e%252e/metrics",
    b"/auth/..\\metrics",
    b"/.well-known/../metrics",
    b"/.well-known/%2e%2e/docs",
    b"/.well-known/..%2f..%2fopenapi.json",
    b"/auth/%2e%2e/openapi.json",
    b"/auth/%2e%2e/healthz",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=[p.decode() for p in HOSTILE_PATHS])
async def test_proxied_paths_never_leave_auth_and_well_known(edge: Edge, auth_server: str, path: bytes) -> None:
    async with httpx.AsyncClient() as client:  # auth itself serves these (the proxy must not)
        assert (await client.get(auth_server + "/metrics")).status_code == 200
    status, body = await raw_request(edge.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status in (400, 404), (status, body[:200])
    assert b"# HELP" not in body and b"openapi" not in body.lower() and b'"status"' not in body


async def test_the_proxy_still_serves_auth(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        jwks = await client.get("/.well-known/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"]
        login = await client.post("/auth/token", data={"username": "nobody@example.com", "password": "x" * 12})
        assert login.status_code in (400, 401)


async def test_every_response_carries_the_security_headers(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        for path in ("/", "/static/map.css", "/api/live/stats", "/api/rides/x", "/nowhere", "/healthz"):
            r = await client.get(path)
            assert r.headers.get("x-content-type-options") == "nosniff", path
            assert r.headers.get("referrer-policy") == "no-referrer", path
            csp = r.headers.get("content-security-policy", "")
            assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp, (path, csp)
