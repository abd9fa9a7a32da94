"""Surge fan-out through the real gateway: SurgeChanged on the topic -> hub -> "surge" websocket
frames (polygon with a cell's first frame, a snapshot for clients that join later)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import h3
import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from ridehail.domain.events import SurgeChanged, encode
from ridehail.domain.topics import PRICING_SURGE
from tests.integration.ws_support import LiveGateway, start_gateway

pytestmark = pytest.mark.integration

CELL = h3.latlng_to_cell(57.70, 11.97, 8)


@pytest.fixture
async def gateway(broker: str) -> AsyncIterator[LiveGateway]:
    gw, close = await start_gateway(broker, ws_public_map=True)
    try:
        yield gw
    finally:
        await close()


def publish(gw: LiveGateway, multiplier: float, previous: float = 1.0) -> None:
    ev = SurgeChanged(cell=CELL, resolution=8, multiplier=multiplier, previous=previous, demand=9, supply=1)
    gw.producer.produce(PRICING_SURGE.name, encode(ev), key=CELL)
    gw.producer.flush(5)


async def next_surge(ws: ClientConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        if msg["t"] == "surge":
            return msg


async def first_surge(gw: LiveGateway, ws: ClientConnection, multiplier: float) -> dict[str, Any]:
    """The feed starts at the latest offsets once it has them: publish until the first one lands."""
    for _ in range(40):
        publish(gw, multiplier)
        try:
            return await next_surge(ws, 0.5)
        except TimeoutError:
            continue
    raise AssertionError("no surge frame within 20 s")


async def test_surge_changes_reach_every_client_with_the_polygon_once(gateway: LiveGateway) -> None:
    ws = await gateway.client()
    first = await first_surge(gateway, ws, 1.6)
    assert first["res"] == 8
    [(cell, multiplier, polygon)] = first["c"]
    assert (cell, multiplier) == (CELL, 1.6)
    assert len(polygon) == 6
    assert all(abs(lat - 57.70) < 0.01 and abs(lon - 11.97) < 0.02 for lat, lon in polygon)
    assert gateway.hub.surge[CELL] == 1.6  # what quotes read
    await asyncio.sleep(0.3)
    while True:  # drain repeats of the first change (same value: polygon already sent)
        try:
            await next_surge(ws, 0.3)
        except TimeoutError:
            break

    publish(gateway, 2.1, previous=1.6)
    second = await next_surge(ws)
    assert second["c"] == [[CELL, 2.1, None]]  # the client has the polygon already

    late = await gateway.client()  # joins after the changes: gets the snapshot, polygon included
    snapshot = await next_surge(late)
    assert snapshot["c"][0][:2] == [CELL, 2.1] and len(snapshot["c"][0][2]) == 6
    await ws.close()
    await late.close()


async def test_a_bad_surge_message_is_skipped_and_counted(gateway: LiveGateway) -> None:
    ws = await gateway.client()
    await first_surge(gateway, ws, 1.2)  # the feed reads the surge topic
    bad_before = gateway.feed.bad
    gateway.producer.produce(PRICING_SURGE.name, b'{"type":"pricing.surge","cell":""}', key="x")
    publish(gateway, 1.3)
    while (frame := await next_surge(ws))["c"][0][1] != 1.3:
        pass
    assert frame["c"][0][:2] == [CELL, 1.3]
    assert gateway.feed.bad == bad_before + 1
    await ws.close()
