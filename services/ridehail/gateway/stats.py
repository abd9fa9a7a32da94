"""The periodic stats frame every map client gets, and the matching-lag poller behind it."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from ridehail.common.logging import get_logger
from ridehail.gateway import metrics
from ridehail.gateway.feed import LiveFeed
from ridehail.gateway.hub import Hub

log = get_logger(__name__)


class StatsPublisher:
    """Every ``interval_s``: ``{"t":"s", cars, ev_in, fr_out, lag, glag, mode, clients}`` to all clients."""

    def __init__(self, hub: Hub, feed: LiveFeed | None, matching_stats_url: str | None, interval_s: float) -> None:
        self.hub = hub
        self.feed = feed
        self.url = matching_stats_url
        self.interval_s = interval_s
        self.matching_lag: int | None = None
        self._warned = False
        self.last: dict[str, object] = {}

    async def poll_matching(self, client: httpx.AsyncClient) -> None:
        if not self.url:
            return
        try:
            response = await client.get(self.url)
            response.raise_for_status()
            lag = response.json().get("consumer_lag")
            self.matching_lag = int(lag) if isinstance(lag, int | float) else None
            if self.matching_lag is not None:
                metrics.MATCHING_LAG.set(self.matching_lag)
            self._warned = False
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            self.matching_lag = None
            if not self._warned:
                log.info("matching_stats_unavailable", url=self.url, error=type(exc).__name__)
                self._warned = True

    def snapshot(self, dt: float, events_in: int, frames_out: int) -> dict[str, object]:
        return {
            "t": "s",
            "ts": time.time_ns() // 1_000_000,
            "cars": self.hub.cars_online(),
            "ev_in": round(events_in / dt, 1),
            "fr_out": round(frames_out / dt, 1),
            "lag": self.matching_lag,
            "glag": self.feed.lag if self.feed else None,
            "mode": self.feed.mode if self.feed else "live",
            "clients": len(self.hub.clients),
        }

    async def run(self, stop: asyncio.Event) -> None:
        c = self.hub.counters
        last_in, last_out, last_t = c.events_in, c.frames_out, time.monotonic()
        async with httpx.AsyncClient(timeout=1.0) as client:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
                    break
                except TimeoutError:
                    pass
                await self.poll_matching(client)
                now = time.monotonic()
                self.last = self.snapshot(max(now - last_t, 1e-3), c.events_in - last_in, c.frames_out - last_out)
                last_in, last_out, last_t = c.events_in, c.frames_out, now
                metrics.CARS.set(len(self.hub.cars))
                self.hub.send_all(orjson.dumps(self.last))
