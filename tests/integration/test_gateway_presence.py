"""The live map's view of presence and offers, over a real broker and websocket: a car silent for
the presence TTL is sent as offline and comes back with its next ping; a car held by an offer is
sent as offered until the offer is withdrawn, and the ride's rider gets the offer event."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ridehail.domain.events import LatLon, RideOffered, RideOfferTimedOut, encode, now_ms
from ridehail.domain.topics import RIDE_EVENT
from ridehail.gateway.live_state import OFFERED, OFFLINE, STATUS_CODES
from tests.integration.ws_support import CITY, LiveGateway, frames_until, start_gateway, warm_up

pytestmark = pytest.mark.integration

AVAILABLE = STATUS_CODES["available"]


@pytest.fixture
async def quick_gateway(broker: str) -> AsyncIterator[LiveGateway]:
    gw, close = await start_gateway(broker, ws_public_map=True, driver_presence_ttl_s=1.0)
    try:
        yield gw
    finally:
        await close()


def states(frames: list[dict[str, Any]], car: str) -> list[int]:
    return [c[3] for f in frames for c in f["c"] if c[0] == car]


def last_state_is(car: str, status: int) -> Any:
    return lambda fs: bool(states(fs, car)) and states(fs, car)[-1] == status


async def test_a_silent_car_is_sent_offline_and_comes_back_with_its_next_ping(quick_gateway: LiveGateway) -> None:
    gw = quick_gateway
    ws = await gw.client(bbox=CITY)
    await warm_up(gw, ws)
    car = f"quiet-{uuid.uuid4().hex[:6]}"
    gw.ping(car, 57.71, 11.96, 1)
    gw.producer.flush(5)
    await frames_until(ws, last_state_is(car, AVAILABLE))
    frames = await frames_until(ws, last_state_is(car, OFFLINE), timeout=10)  # after 1 s without a ping
    assert states(frames, car)[-1] == OFFLINE
    gw.ping(car, 57.7101, 11.96, 2)
    gw.producer.flush(5)
    await frames_until(ws, last_state_is(car, AVAILABLE))
    assert gw.hub.cars[car].shown_status == AVAILABLE
    await ws.close()


async def test_an_offered_car_is_sent_offered_and_its_rider_sees_the_offer(quick_gateway: LiveGateway) -> None:
    gw = quick_gateway
    rider = f"rider-{uuid.uuid4().hex[:6]}"
    ws = await gw.client(token=gw.keys.token("rider", sub=rider), bbox=CITY)
    await warm_up(gw, ws)
    car, ride_id = f"held-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex

    async def keep_pinging() -> None:
        seq = 0
        while True:
            seq += 1
            gw.ping(car, 57.69, 11.99, seq)
            gw.producer.flush(5)
            await asyncio.sleep(0.3)

    pinging = asyncio.create_task(keep_pinging())
    try:
        await frames_until(ws, last_state_is(car, AVAILABLE))
        offer = RideOffered(
            ride_id=ride_id,
            rider_id=rider,
            driver_id=car,
            pickup=LatLon(57.69, 11.99),
            dropoff=LatLon(57.70, 12.0),
            expires_ts=now_ms() + 5000,
        )
        gw.producer.produce(RIDE_EVENT.name, encode(offer), ride_id)
        gw.producer.flush(5)

        def offered_and_told(fs: list[dict[str, Any]]) -> bool:
            told = any(e.get("ride_id") == ride_id for f in fs for e in f["e"])
            return told and OFFERED in states(fs, car)

        frames = await frames_until(ws, offered_and_told)
        told = [e for f in frames for e in f["e"] if e.get("ride_id") == ride_id]
        assert (told[0]["type"], told[0]["driver_id"]) == ("ride.offered", car)
        withdrawn = RideOfferTimedOut(ride_id=ride_id, driver_id=car, offer_id=offer.event_id, reason="no answer")
        gw.producer.produce(RIDE_EVENT.name, encode(withdrawn), ride_id)
        gw.producer.flush(5)
        await frames_until(ws, last_state_is(car, AVAILABLE))
    finally:
        pinging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinging
        await ws.close()
