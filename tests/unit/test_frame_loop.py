"""The gateway's frame loop: a round as soon as the live feed woke it after a quiet spell, never
two rounds within one frame interval, an idle round two intervals after the last, and a stop
that does not wait for either. The interval is 2 s so that every check has a second or more of
slack on a busy machine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from ridehail.gateway.hub import Hub
from ridehail.gateway.main import frame_loop

INTERVAL_S = 2.0


async def _until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


@contextlib.asynccontextmanager
async def _running(hub: Hub, on_change: bool) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(frame_loop(hub, INTERVAL_S, stop, on_change=on_change))
    try:
        yield stop
    finally:
        stop.set()
        # it ends on its own, well before an interval: it does not sleep through a stop
        await asyncio.wait_for(task, timeout=INTERVAL_S / 2)


async def test_a_change_after_a_quiet_spell_goes_out_at_once_and_rounds_stay_an_interval_apart() -> None:
    hub = Hub()
    async with _running(hub, on_change=True):
        assert await _until(lambda: hub.round == 1, 1.0)  # the first round at once
        await asyncio.sleep(INTERVAL_S + 0.5)
        # quiet: no round when the interval is up, the loop waits for the feed (or one more interval)
        assert hub.round == 1
        hub.woken.set()
        assert await _until(lambda: hub.round == 2, 1.5)  # at once, not at the idle round (t = 4 s)
        hub.woken.set()  # more comes right after that round: it waits for the interval to pass
        await asyncio.sleep(1.0)
        assert hub.round == 2
        assert await _until(lambda: hub.round == 3, INTERVAL_S)


async def test_with_nothing_new_a_round_still_comes_two_intervals_after_the_last() -> None:
    hub = Hub()
    async with _running(hub, on_change=True):
        assert await _until(lambda: hub.round == 1, 1.0)
        started = time.monotonic()
        assert await _until(lambda: hub.round == 2, 2 * INTERVAL_S + 1.5)
        assert time.monotonic() - started > INTERVAL_S + 0.5  # not at the end of the first interval


async def test_without_on_change_rounds_follow_the_clock() -> None:
    hub = Hub()
    async with _running(hub, on_change=False):
        assert await _until(lambda: hub.round == 1, 1.0)
        # nothing wakes it, yet the next round comes one interval later, not two
        assert await _until(lambda: hub.round == 2, 1.5 * INTERVAL_S)
