"""What the live-feed websocket tests share: real EdDSA keys and verifier, a gateway hub + feed +
websocket server on the session broker, and frame helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect

from ridehail.common.auth_tokens import AUDIENCE, ISSUER, TokenVerifier
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.domain.events import DriverLocation, encode
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.gateway.feed import LiveFeed
from ridehail.gateway.hub import Hub
from ridehail.gateway.main import frame_loop, make_hub, start_ws_server
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.tickets import TicketStore
from ridehail.gateway.ws import LiveSocket

CITY = [11.86, 57.65, 12.08, 57.76]
WEST = [11.86, 57.65, 11.97, 57.76]


# -- tokens: a real key pair, the real verifier --------------------------------------------------
@dataclass
class Keys:
    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def token(self, role: str, sub: str | None = None, ttl_s: int = 600) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub or uuid.uuid4().hex,
            "role": role,
            "jti": uuid.uuid4().hex,
            "typ": "access",
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + ttl_s,
        }
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"})


@dataclass
class LiveGateway:
    url: str
    hub: Hub
    feed: LiveFeed
    keys: Keys
    producer: EventProducer

    def ping(self, driver_id: str, lat: float, lon: float, seq: int, status: str = "available") -> None:
        ev = DriverLocation(driver_id=driver_id, seq=seq, lat=lat, lon=lon, status=status)  # type: ignore[arg-type]
        self.producer.produce(DRIVER_LOCATION.name, encode(ev), key=driver_id)

    async def client(self, token: str | None = None, bbox: list[float] | None = None, **kw: Any) -> ClientConnection:
        ws = await connect(self.url, compression=None, **kw)
        await ws.send(orjson.dumps({"t": "auth", "token": token} if token else {"t": "auth"}).decode())
        hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["t"] == "hello", hello
        if bbox:
            await ws.send(orjson.dumps({"t": "sub", "bbox": bbox}).decode())
        return ws


async def start_gateway(broker: str, **overrides: Any) -> tuple[LiveGateway, Callable[[], Any]]:
    values: dict[str, Any] = {
        "frame_interval_ms": 100,
        "stats_interval_ms": 500,
        "ws_slow_client_grace_s": 1.0,
        "ws_write_buffer_limit_bytes": 65536,
        "ws_auth_timeout_s": 1.0,
    }
    settings = GatewaySettings(**{**values, **overrides})
    keys = Keys()
    verifier = TokenVerifier("http://127.0.0.1:9/unused")
    verifier.load_jwks(keys.jwks())
    hub = make_hub(settings)
    feed = LiveFeed(broker, hub)
    live = LiveSocket(hub, settings, verifier, TicketStore())
    stop = asyncio.Event()
    port = free_port()
    server = await start_ws_server(live, settings, "127.0.0.1", port)
    tasks = [asyncio.create_task(feed.run(stop)), asyncio.create_task(frame_loop(hub, 0.1, stop))]
    producer = EventProducer(broker, "test-gateway-ws")
    deadline = time.monotonic() + 20
    while not feed.assigned and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert feed.assigned, "live feed never got its partitions"

    async def close() -> None:
        stop.set()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*tasks, return_exceptions=True)
        producer.close(5)

    return LiveGateway(f"ws://127.0.0.1:{port}/", hub, feed, keys, producer), close


@pytest.fixture
async def gateway(broker: str) -> AsyncIterator[LiveGateway]:
    gw, close = await start_gateway(broker, ws_public_map=True)
    try:
        yield gw
    finally:
        await close()


@pytest.fixture
async def private_gateway(broker: str) -> AsyncIterator[LiveGateway]:
    gw, close = await start_gateway(broker, ws_public_map=False)
    try:
        yield gw
    finally:
        await close()


async def frames_until(ws: ClientConnection, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10):
    """Collect car frames until ``done(frames)``; raises TimeoutError otherwise."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not done(frames):
            msg = orjson.loads(await ws.recv())
            if msg["t"] == "f":
                frames.append(msg)
    return frames


async def collect(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Every car frame received within ``seconds``."""
    frames: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                msg = orjson.loads(await ws.recv())
                if msg["t"] == "f":
                    frames.append(msg)
    return frames


def car_ids(frames: list[dict[str, Any]]) -> list[str]:
    return [c[0] for f in frames for c in f["c"]]


async def warm_up(gw: LiveGateway, ws: ClientConnection) -> None:
    """The feed starts at the latest offset: ping until a frame proves it is reading."""
    probe = f"probe-{uuid.uuid4().hex[:6]}"
    async with asyncio.timeout(20):
        seq = 0
        while True:
            seq += 1
            gw.ping(probe, 57.70, 11.95, seq)
            gw.producer.flush(5)
            try:
                frames = await frames_until(ws, lambda fs: probe in car_ids(fs), timeout=0.5)
                if frames:
                    return
            except TimeoutError:
                continue
