"""The live-feed websocket against a real broker: frames, viewport filtering, coalescing, slow
clients, bad input and auth refusals. Tokens are real EdDSA JWTs checked by the real verifier."""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
from websockets.exceptions import ConnectionClosed

from ridehail.common.auth_tokens import AUDIENCE, ISSUER, TokenVerifier
from ridehail.common.kafka import EventProducer
from ridehail.common.ports import free_port
from ridehail.domain.events import DriverLocation, LatLon, RideAssigned, encode
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT
from ridehail.gateway.feed import LiveFeed
from ridehail.gateway.hub import Hub
from ridehail.gateway.main import frame_loop, make_hub, start_ws_server
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.tickets import TicketStore
from ridehail.gateway.ws import LiveSocket

pytestmark = pytest.mark.integration

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
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.kid})


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
    settings = GatewaySettings(
        frame_interval_ms=100,
        stats_interval_ms=500,
        ws_slow_client_grace_s=1.0,
        ws_write_buffer_limit_bytes=65536,
        ws_auth_timeout_s=1.0,
        **overrides,
    )
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


# -- frames -----------------------------------------------------------------------------------------
async def test_frames_are_filtered_by_viewport_and_coalesced(gateway: LiveGateway) -> None:
    west = await gateway.client(bbox=WEST)
    city = await gateway.client(bbox=CITY)
    await warm_up(gateway, city)

    tag = uuid.uuid4().hex[:6]
    west_car, east_car = f"w-{tag}", f"e-{tag}"
    for seq in range(1, 51):  # one burst: 50 pings per car, well inside one frame interval
        gateway.ping(west_car, 57.70 + seq * 1e-5, 11.90, seq)
        gateway.ping(east_car, 57.70 + seq * 1e-5, 12.05, seq)
    gateway.producer.flush(5)
    last_lat = round(57.70 + 50 * 1e-5, 6)

    def has_last(car: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda fs: any(c[0] == car and c[1] == last_lat for f in fs for c in f["c"])

    city_frames = await frames_until(city, lambda fs: has_last(west_car)(fs) and has_last(east_car)(fs))
    west_frames = await frames_until(west, has_last(west_car))
    west_frames += await collect(west, 0.8)  # anything else it gets must still be in its viewport

    assert east_car not in car_ids(west_frames), "a car outside the viewport reached the client"
    assert all(WEST[0] <= c[2] <= WEST[2] for f in west_frames for c in f["c"])
    # coalesced: far fewer car entries than pings, and the latest state wins
    assert 1 <= car_ids(city_frames).count(west_car) < 50
    assert 1 <= car_ids(west_frames).count(west_car) < 50
    entry = [c for f in city_frames for c in f["c"] if c[0] == east_car][-1]
    assert entry[1] == last_lat and entry[3] == 0 and entry[4] > 0  # status code, ping ts
    await west.close()
    await city.close()


async def test_new_viewport_gets_a_snapshot_of_its_cars(gateway: LiveGateway) -> None:
    city = await gateway.client(bbox=CITY)
    await warm_up(gateway, city)
    parked = f"parked-{uuid.uuid4().hex[:6]}"
    gateway.ping(parked, 57.71, 11.92, 1)
    gateway.producer.flush(5)
    await frames_until(city, lambda fs: parked in car_ids(fs))
    late = await gateway.client(bbox=WEST)  # joins after the car's only ping
    frames = await frames_until(late, lambda fs: parked in car_ids(fs))
    assert parked in car_ids(frames)
    await city.close()
    await late.close()


async def test_never_reading_client_is_collapsed_then_closed_while_another_keeps_receiving(
    gateway: LiveGateway,
) -> None:
    fast = await gateway.client(bbox=CITY)
    await warm_up(gateway, fast)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1].strip("/"))))
    slow = await gateway.client(bbox=CITY, sock=sock, max_queue=1)
    slow_client = next(c for c in gateway.hub.clients if c.conn.remote_address[1] == sock.getsockname()[1])

    tag = uuid.uuid4().hex[:6]
    fast_frames = frames_before_close = 0
    closed_at_round: int | None = None
    async with asyncio.timeout(30):
        seq = 0
        while closed_at_round is None or gateway.hub.round < closed_at_round + 10:
            seq += 1
            for i in range(1500):  # ~100 KB of frame per round for the slow client to not read
                gateway.ping(f"{tag}-{i}", 57.66 + i * 6e-5, 11.87 + seq * 1e-4, seq)
            gateway.producer.flush(5)
            with contextlib.suppress(TimeoutError):
                fast_frames += len(await frames_until(fast, lambda fs: len(fs) >= 1, timeout=1))
            if slow_client.closing and closed_at_round is None:
                closed_at_round = gateway.hub.round
                frames_before_close = fast_frames
    assert gateway.hub.counters.collapsed > 0, "the slow client was never held back"
    assert gateway.hub.counters.slow_closed >= 1
    assert gateway.hub.counters.round_errors == 0
    assert slow_client not in gateway.hub.clients
    assert fast_frames > frames_before_close, "the reading client stopped getting frames"
    await fast.send('{"t":"ping"}')
    async with asyncio.timeout(5):
        while orjson.loads(await fast.recv())["t"] != "pong":
            pass
    with contextlib.suppress(ConnectionClosed):
        await slow.close()
    await fast.close()


# -- bad input --------------------------------------------------------------------------------------
async def test_bad_messages_get_error_frames_and_the_connection_survives(gateway: LiveGateway) -> None:
    ws = await gateway.client()
    bad = [
        ("{not json", "bad_json"),
        ('{"t":"dance"}', "unknown_type"),
        ('{"t":"sub","bbox":[12.0,57.6,11.9,57.7]}', "bad_bbox"),
        ('{"t":"sub","bbox":[11.9,57.6,12.0]}', "bad_bbox"),
        ('{"t":"sub","bbox":["a",57.6,12.0,57.7]}', "bad_bbox"),
        ('{"t":"sub","bbox":[-500,57.6,12.0,57.7]}', "bad_bbox"),
        ('{"t":"sub","bbox":[11.9,57.6,1e999,57.7]}', "bad_json"),
        ('{"t":"sub","bbox":' + "[" * 10 + "]" * 10 + "}", "bad_bbox"),
        ('{"t":"sub","bbox":[11.9,57.6,12.0,57.7],"x":"' + "y" * 5000 + '"}', "too_large"),
        (b"\x00\x01", "binary"),
        ('{"t":"auth","token":"x"}', "already_authenticated"),
        ("[1,2,3]", "unknown_type"),
    ]
    for message, code in bad:
        await ws.send(message)
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["t"] == "err" and reply["code"] == code, (message[:40], reply)
        await asyncio.sleep(0.25)  # stay under the rate limit: only the content is bad here
    await ws.send('{"t":"ping"}')
    assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["t"] == "pong"
    await ws.close()


async def test_subscribe_flood_is_rate_limited_then_closed(gateway: LiveGateway) -> None:
    ws = await gateway.client()
    sub = orjson.dumps({"t": "sub", "bbox": CITY}).decode()
    codes: list[str] = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            for _ in range(500):
                await ws.send(sub)
            while True:
                msg = orjson.loads(await ws.recv())
                if msg["t"] == "err":
                    codes.append(msg["code"])
    assert "rate_limited" in codes
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    other = await gateway.client()  # the gateway itself is fine
    await other.close()


# -- auth -------------------------------------------------------------------------------------------
async def refused(url: str, first: str | None) -> tuple[int, str]:
    async with connect(url) as ws:
        if first is not None:
            await ws.send(first)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_auth_refusals(private_gateway: LiveGateway) -> None:
    gw = private_gateway
    keys = gw.keys
    assert await refused(gw.url, '{"t":"auth"}') == (4401, "missing token")
    code, reason = await refused(gw.url, orjson.dumps({"t": "auth", "token": keys.token("rider", ttl_s=-60)}).decode())
    assert (code, reason) == (4401, "invalid token: token expired")
    code, reason = await refused(gw.url, orjson.dumps({"t": "auth", "token": Keys().token("rider")}).decode())
    assert code == 4401 and reason.startswith("invalid token:")
    code, reason = await refused(gw.url, orjson.dumps({"t": "auth", "token": keys.token("driver")}).decode())
    assert code == 4403 and "driver" in reason
    assert (await refused(gw.url, '{"t":"sub","bbox":[1,2,3,4]}'))[0] == 4401
    assert (await refused(gw.url, orjson.dumps({"t": "auth", "ticket": "made-up"}).decode()))[0] == 4401
    assert (await refused(gw.url, None))[0] == 4408
    ok = await gw.client(keys.token("viewer"))
    await ok.close()


async def test_riders_see_only_their_own_ride_events(gateway: LiveGateway) -> None:
    keys = gateway.keys
    rider_a, rider_b = uuid.uuid4().hex, uuid.uuid4().hex
    a = await gateway.client(keys.token("rider", rider_a), bbox=CITY)
    admin = await gateway.client(keys.token("admin"), bbox=CITY)
    anonymous = await gateway.client(bbox=CITY)
    await warm_up(gateway, admin)
    rides = {}
    for rider in (rider_a, rider_b):
        ride_id = uuid.uuid4().hex
        rides[rider] = ride_id
        ev = RideAssigned(
            ride_id=ride_id, rider_id=rider, driver_id="d1", pickup=LatLon(57.7, 11.9), dropoff=LatLon(57.71, 11.95)
        )
        gateway.producer.produce(RIDE_EVENT.name, encode(ev), key=ride_id)
    gateway.producer.flush(5)

    def ride_ids(frames: list[dict[str, Any]]) -> set[str]:
        return {e["ride_id"] for f in frames for e in f["e"]}

    admin_frames = await frames_until(admin, lambda fs: len(ride_ids(fs)) >= 2)
    a_frames = await frames_until(a, lambda fs: rides[rider_a] in ride_ids(fs))
    a_frames += await collect(a, 0.8)
    anon_frames = await collect(anonymous, 0.5)
    assert ride_ids(admin_frames) >= set(rides.values())
    assert ride_ids(a_frames) == {rides[rider_a]}
    assert not ride_ids(anon_frames)
    for ws in (a, admin, anonymous):
        await ws.close()


async def test_silent_client_is_dropped_by_the_heartbeat(broker: str) -> None:
    gw, close = await start_gateway(broker, ws_public_map=True, ws_ping_interval_s=0.5, ws_ping_timeout_s=0.5)
    try:
        listening = await gw.client()  # reads (and so answers pings): stays
        port = int(gw.url.rsplit(":", 1)[1].strip("/"))
        silent = socket.create_connection(("127.0.0.1", port))  # authenticates, then never reads or pongs
        silent.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        payload = b'{"t":"auth"}'
        mask = b"\x01\x02\x03\x04"
        silent.sendall(
            bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        )
        async with asyncio.timeout(10):
            while len(gw.hub.clients) < 2:
                await asyncio.sleep(0.05)
            while len(gw.hub.clients) > 1:  # the silent one misses its pong deadline
                await listening.send('{"t":"ping"}')
                await asyncio.wait_for(listening.recv(), 5)
                await asyncio.sleep(0.2)
        remaining = next(iter(gw.hub.clients))
        assert remaining.conn.remote_address[1] != silent.getsockname()[1]
        silent.close()
        await listening.close()
    finally:
        await close()
