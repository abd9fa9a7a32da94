"""The live-feed websocket's authentication against a real broker: refusals with reasons, riders
seeing only their own ride events, and the heartbeat dropping silent clients."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ridehail.domain.events import LatLon, RideAssigned, encode
from ridehail.domain.topics import RIDE_EVENT
from tests.integration.ws_support import (
    CITY,
    Keys,
    LiveGateway,
    collect,
    frames_until,
    start_gateway,
    warm_up,
)

pytestmark = pytest.mark.integration


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
