"""A bound on the password hashes one auth process computes at once.

Each Argon2id hash holds ~19 MiB and ~16 ms of a core; run unbounded in the thread pool, a burst of
logins would run dozens side by side (anyio's pool has 40 threads). The gate lets ``concurrency``
hashes run and ``queue`` more wait for a slot; any request beyond that is refused at once with 503
and ``Retry-After``, before it has cost any memory or CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool

from ridehail.domain.errors import Unavailable

T = TypeVar("T")

BUSY = "too many password checks in progress; retry shortly"


class HashGate:
    def __init__(self, concurrency: int, queue: int) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self.concurrency = concurrency
        self.queue = queue
        self._slots = asyncio.Semaphore(concurrency)
        self.running = 0
        self.waiting = 0
        self.refused = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread once a slot is free; :class:`Unavailable` if the queue is full."""
        if self._slots.locked() and self.waiting >= self.queue:
            self.refused += 1
            raise Unavailable(BUSY)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await run_in_threadpool(fn, *args)
        finally:
            self.running -= 1
            self._slots.release()
