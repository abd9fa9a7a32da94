"""The live-feed websocket against a real broker: frames, viewport filtering, coalescing, slow
clients and bad input. Tokens are real EdDSA JWTs checked by the real verifier."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.ws_support import (
    CITY,
    WEST,
    LiveGateway,
    car_ids,
    collect,
    frames_until,
    warm_up,
)

pytestmark = pytest.mark.integration


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
        ('{"t":"auth","token":"x"}', "invalid_token"),  # re-auth with a bad token: refused, socket kept
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
