"""Group commit for the ``rest`` edge: single-ping requests that arrive within a short window are
written together in one upsert statement; each request is answered only after that commit.

The first ping of a group opens a window of ``window_s``; the group is written when the window
closes or when it holds ``max_items`` pings, whichever comes first. Groups are written one after
another on the pool, so a slow commit lets the next group grow instead of piling up statements.
A failed commit fails every request of its group (the edge answers each ``503``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ridehail.common.logging import get_logger
from ridehail.domain.events import DriverLocation

log = get_logger(__name__)

WriteMany = Callable[[Sequence[DriverLocation]], Awaitable[list[str]]]


class GroupCommit:
    """``await write(ping)`` -> the ping's outcome (``stored``/``stale``) once its group committed."""

    def __init__(self, write_many: WriteMany, window_s: float, max_items: int) -> None:
        if window_s <= 0 or max_items < 1:
            raise ValueError("group commit needs window_s > 0 and max_items >= 1")
        self._write_many = write_many
        self.window_s = window_s
        self.max_items = max_items
        self._pending: list[tuple[DriverLocation, asyncio.Future[str]]] = []
        self._opened_at = 0.0  # when the oldest pending ping arrived
        self._full = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.groups = 0

    async def write(self, ping: DriverLocation) -> str:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        if not self._pending:
            self._opened_at = loop.time()
        self._pending.append((ping, fut))
        if len(self._pending) >= self.max_items:
            self._full.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        """Write groups one after another while pings wait (no await between the last check of
        ``_pending`` and returning, so a ping is never left without a runner)."""
        loop = asyncio.get_running_loop()
        while self._pending:
            left = self._opened_at + self.window_s - loop.time()
            if left > 0 and len(self._pending) < self.max_items:
                try:
                    async with asyncio.timeout(left):
                        await self._full.wait()
                except TimeoutError:
                    pass
            group, self._pending = self._pending[: self.max_items], self._pending[self.max_items :]
            self._opened_at = loop.time()
            if len(self._pending) < self.max_items:
                self._full.clear()
            await self._commit(group)

    async def _commit(self, group: list[tuple[DriverLocation, asyncio.Future[str]]]) -> None:
        self.groups += 1
        try:
            outcomes = await self._write_many([p for p, _ in group])
        except Exception as exc:  # every request of the group gets the same failure (a 503)
            log.warning("group_commit_failed", pings=len(group), error=repr(exc)[:200])
            for _, fut in group:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), outcome in zip(group, outcomes, strict=True):
            if not fut.done():
                fut.set_result(outcome)

    async def close(self) -> None:
        if self._runner is not None and not self._runner.done():
            await asyncio.wait({self._runner}, timeout=self.window_s + 10)
