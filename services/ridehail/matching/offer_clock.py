"""When to look for offers to withdraw: at the deadline of every offer this instance made, and
every ``RIDEHAIL_MATCHING_OFFER_CHECK_MS`` for the rest (drivers that went silent while offered,
offers of an instance that died). Postgres decides which offers are due
(:func:`ridehail.stores.offers.offers_to_withdraw`); the clock only says when to ask, so a
time-out is enforced within a few milliseconds of its deadline instead of at the next
assignment round."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable

from ridehail.common.logging import get_logger
from ridehail.domain.events import now_ms

log = get_logger(__name__)


class OfferClock:
    def __init__(self) -> None:
        self._due: list[int] = []  # epoch ms, a heap
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, due_ms: int) -> None:
        """An offer this instance made is due at ``due_ms`` (epoch ms)."""
        heapq.heappush(self._due, due_ms)
        self._wake.set()

    def next_due(self) -> int | None:
        return self._due[0] if self._due else None

    def pop_due(self, at_ms: int) -> int:
        """Forget every deadline up to ``at_ms``; returns how many there were."""
        n = 0
        while self._due and self._due[0] <= at_ms:
            heapq.heappop(self._due)
            n += 1
        return n

    async def run(self, stop: asyncio.Event, check: Callable[[], Awaitable[None]], every_s: float) -> None:
        """Call ``check`` at each deadline and at least every ``every_s``, until ``stop``."""
        last_check = time.monotonic()
        while not stop.is_set():
            due = self.next_due()
            wait_s = every_s - (time.monotonic() - last_check)
            if due is not None:
                wait_s = min(wait_s, (due - now_ms()) / 1000)
            if wait_s > 0:
                self._wake.clear()
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if stop.is_set():
                    return
                due = self.next_due()
                if time.monotonic() - last_check < every_s and (due is None or due > now_ms()):
                    continue  # woken by a new deadline that is not due yet
            self.pop_due(now_ms())
            last_check = time.monotonic()
            try:
                await check()
            except Exception as exc:
                log.warning("offer_check_failed", error=repr(exc)[:300])
