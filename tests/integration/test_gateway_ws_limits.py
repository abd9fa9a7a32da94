"""The live-feed websocket's edge against hostile clients, on the real server and broker: Origin
checked against the allow-list at the handshake, connections that have not authenticated counted
and capped, connections per client address capped, and a socket closed when its token expires
unless the client re-authenticated on it."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.ws_support import start_gateway

pytestmark = pytest.mark.integration


async def closed_with(ws: ClientConnection, timeout: float = 10) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_origin_is_checked_against_the_allow_list(broker: str) -> None:
    gw, close = await start_gateway(broker, ws_allowed_origins="https://map.example.org", gateway_port=8123)
    try:
        for evil in ("http://evil.example", "https://map.example.org.evil.example", "null"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(gw.url, origin=evil)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403
        ok = await gw.client(origin="https://map.example.org")  # type: ignore[arg-type]
        await ok.close()
        no_origin = await gw.client()  # not a browser: no Origin header, nothing to forge
        await no_origin.close()
    finally:
        await close()


async def test_the_default_allow_list_is_the_gateways_own_origins(broker: str) -> None:
    gw, close = await start_gateway(broker, public_host="127.0.0.1", gateway_port=8123)
    try:
        for own in ("http://127.0.0.1:8123", "http://localhost:8123"):
            ws = await gw.client(origin=own)  # type: ignore[arg-type]
            await ws.close()
        with pytest.raises(InvalidStatus):
            await connect(gw.url, origin="http://127.0.0.1:9999")  # type: ignore[arg-type]
    finally:
        await close()


async def test_connections_that_have_not_authenticated_are_capped(broker: str) -> None:
    gw, close = await start_gateway(broker, ws_max_unauthenticated=3, ws_auth_timeout_s=4.0)
    try:
        silent = [await connect(gw.url) for _ in range(3)]  # open, never authenticate
        await asyncio.sleep(0.3)
        extra = await connect(gw.url)
        code, reason = await closed_with(extra, 5)
        assert code == 1013 and "unauthenticated" in reason
        with pytest.raises(ConnectionClosed):  # whoever comes next, until a slot frees
            await gw.client(gw.keys.token("viewer"))
        for ws in silent:
            await ws.close()
        await asyncio.sleep(0.3)
        ok = await gw.client(gw.keys.token("viewer"))
        await ok.close()
    finally:
        await close()


async def test_unauthenticated_slots_free_up_after_the_auth_timeout(broker: str) -> None:
    gw, close = await start_gateway(broker, ws_max_unauthenticated=2, ws_auth_timeout_s=1.0)
    try:
        silent = [await connect(gw.url) for _ in range(2)]
        for ws in silent:
            assert (await closed_with(ws, 5))[0] == 4408
        ws = await gw.client(gw.keys.token("viewer"))
        await ws.close()
    finally:
        await close()


async def test_connections_per_address_are_capped(broker: str) -> None:
    gw, close = await start_gateway(broker, ws_max_per_address=3)
    try:
        held = [await gw.client(gw.keys.token("viewer")) for _ in range(3)]
        extra = await connect(gw.url)
        code, reason = await closed_with(extra, 5)
        assert code == 1013 and "address" in reason
        await held.pop().close()
        await asyncio.sleep(0.3)
        again = await gw.client(gw.keys.token("viewer"))  # a slot freed: accepted
        await again.close()
        for ws in held:
            await ws.close()
    finally:
        await close()


async def test_a_socket_is_closed_when_its_token_expires(broker: str) -> None:
    gw, close = await start_gateway(broker)
    try:
        started = time.monotonic()
        ws = await gw.client(gw.keys.token("viewer", ttl_s=2))
        code, reason = await closed_with(ws, 10)
        assert (code, reason) == (4401, "token expired")
        assert time.monotonic() - started < 5
    finally:
        await close()


async def test_re_authenticating_on_the_open_socket_keeps_it_open(broker: str) -> None:
    gw, close = await start_gateway(broker)
    try:
        ws = await gw.client(gw.keys.token("viewer", ttl_s=2))
        await ws.send(orjson.dumps({"t": "auth", "token": gw.keys.token("rider", sub="rider-7", ttl_s=600)}).decode())
        hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["t"] == "hello" and hello["role"] == "rider" and hello["sub"] == "rider-7"
        await asyncio.sleep(3.0)  # past the first token's expiry
        await ws.send('{"t":"ping"}')
        async with asyncio.timeout(5):
            while orjson.loads(await ws.recv())["t"] != "pong":
                pass
        # a bad token on the open socket is refused and changes nothing
        await ws.send('{"t":"auth","token":"not.a.token"}')
        async with asyncio.timeout(5):
            while (reply := orjson.loads(await ws.recv()))["t"] != "err":
                pass
        assert reply["code"] == "invalid_token"
        await ws.close()
    finally:
        await close()
