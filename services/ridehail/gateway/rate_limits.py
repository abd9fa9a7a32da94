"""Per-key request rate limits for the gateway's REST routes (a token bucket per key, in memory).

A bucket holds ``per_minute`` requests and refills continuously at ``per_minute`` per minute, so a
key may burst up to the limit and then gets one request every ``60 / per_minute`` seconds. The
table holds at most ``max_keys`` buckets (the least recently used go first), so a flood of new keys
costs bounded memory. Each gateway process counts for itself: behind N instances a rider gets up
to N times the limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def hit(self, key: str, now: float | None = None) -> float | None:
        """Take one request for ``key``: None if allowed, else the seconds until the next one is."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate
