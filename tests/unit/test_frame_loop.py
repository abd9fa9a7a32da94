"""The gateway's frame loop: a round as soon as the live feed woke it after a quiet spell, never
two rounds within one frame interval. The interval is 3 s so that every check has a second or
more of slack on a busy machine."""

from __future__ import annotations

import asyncio
import time

from ridehail.gateway.hub import Hub
from ridehail.gateway.main import frame_loop

INTERVAL_S = 3.0


async def _until(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_a_change_after_a_quiet_spell_goes_out_at_once_and_rounds_stay_an_interval_apart() -> None:
    hub = Hub()
    stop = asyncio.Event()
    task = asyncio.create_task(frame_loop(hub, INTERVAL_S, stop, on_change=True))
    try:
        assert await _until(lambda: hub.round == 1, 1.0)  # the first round at once
        await asyncio.sleep(INTERVAL_S + 0.5)
        # quiet: no round at the end of the interval, the loop waits for the feed (or one more interval)
        assert hub.round == 1
        hub.woken.set()
        assert await _until(lambda: hub.round == 2, 1.5)  # at once, not at the idle round (t = 2 intervals)
        hub.woken.set()  # more comes right after that round: it waits for the interval to pass
        await asyncio.sleep(1.0)
        assert hub.round == 2
        assert await _until(lambda: hub.round == 3, INTERVAL_S)
    finally:
        stop.set()
        task.cancel()


async def test_without_on_change_rounds_follow_the_clock() -> None:
    hub = Hub()
    stop = asyncio.Event()
    task = asyncio.create_task(frame_loop(hub, INTERVAL_S, stop, on_change=False))
    try:
        assert await _until(lambda: hub.round == 1, 1.0)
        hub.woken.set()
        await asyncio.sleep(1.0)
        assert hub.round == 1  # being woken changes nothing
        assert await _until(lambda: hub.round == 2, INTERVAL_S)  # the next tick, with nothing new
    finally:
        stop.set()
        task.cancel()
