"""In-memory login throttles (one auth process; several processes would move this state to Postgres).

- :class:`AccountBackoff`: per account (keyed by the normalised email, existing or not, so that
  throttling reveals nothing about which accounts exist): after ``free_failures`` failed logins each
  further failure doubles the wait, from ``base_s`` up to ``max_s``. A success clears it.
- :class:`WindowLimiter`: per client address, at most ``limit`` attempts per ``window_s``. A caller
  that must count an attempt before knowing whether it fails (a login, before its password hash)
  takes a place with :meth:`WindowLimiter.hit` and gives it back with :meth:`WindowLimiter.release`.
Both answer "retry after N seconds" (0 = go ahead) and forget idle keys, with a hard cap on size.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from ridehail.domain.errors import TooManyRequests


@dataclass
class _Failures:
    count: int
    blocked_until: float
    last: float


class AccountBackoff:
    def __init__(
        self,
        free_failures: int = 3,
        base_s: float = 1.0,
        max_s: float = 900.0,
        forget_after_s: float = 3600.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free_failures = free_failures
        self.base_s = base_s
        self.max_s = max_s
        self.forget_after_s = forget_after_s
        self.max_keys = max_keys
        self._state: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, key: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        state = self._state.get(key)
        if state is None:
            return 0.0
        if now - state.last > self.forget_after_s:
            del self._state[key]
            return 0.0
        return max(0.0, state.blocked_until - now)

    def failure(self, key: str, now: float | None = None) -> float:
        """Record a failed login; return the wait now imposed on the account (0 if none)."""
        now = time.monotonic() if now is None else now
        state = self._state.pop(key, None)
        if state is None or now - state.last > self.forget_after_s:
            state = _Failures(0, 0.0, now)
        state.count += 1
        state.last = now
        over = state.count - self.free_failures
        wait = 0.0 if over <= 0 else min(self.max_s, self.base_s * 2 ** min(over - 1, 62))
        state.blocked_until = now + wait
        self._state[key] = state
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return wait

    def success(self, key: str) -> None:
        self._state.pop(key, None)

    def failures(self, key: str) -> int:
        state = self._state.get(key)
        return state.count if state else 0


class WindowLimiter:
    """At most ``limit`` events per ``window_s`` per key (sliding log)."""

    def __init__(self, limit: int, window_s: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def _window(self, key: str, now: float) -> deque[float]:
        events = self._events.pop(key, None) or deque()
        while events and now - events[0] >= self.window_s:
            events.popleft()
        self._events[key] = events
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)
        return events

    def retry_after(self, key: str, now: float | None = None) -> float:
        """0 if another event is allowed now, else the seconds until one is (records nothing)."""
        now = time.monotonic() if now is None else now
        events = self._window(key, now)
        if len(events) >= self.limit:
            return max(0.001, events[0] + self.window_s - now)
        return 0.0

    def record(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._window(key, now).append(now)

    def hit(self, key: str, now: float | None = None) -> float:
        """Count one event; return 0 if allowed, else the seconds until the next one would be."""
        now = time.monotonic() if now is None else now
        wait = self.retry_after(key, now)
        if not wait:
            self.record(key, now)
        return wait

    def release(self, key: str, at: float) -> None:
        """Take back the event counted at ``at`` (from ``hit(key, now=at)``), e.g. an attempt that succeeded."""
        events = self._events.get(key)
        if events is None:
            return
        with contextlib.suppress(ValueError):  # already slid out of the window
            events.remove(at)
        if not events:
            del self._events[key]


def too_many(seconds: float, reason: str) -> TooManyRequests:
    """429 with ``Retry-After`` rounded up to whole seconds."""
    error = TooManyRequests(reason, seconds)
    error.headers["Retry-After"] = retry_after_header(seconds)
    return error


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` wants whole seconds; round up so a client that obeys it is let through."""
    return str(max(1, math.ceil(seconds)))
