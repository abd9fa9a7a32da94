"""Prometheus metrics of the matching service (batch sizes and consumer lag come from the consumer)."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("ridehail_matching_events_total", "Events applied by matching", ["kind"])
STALE_PINGS = Counter("ridehail_matching_stale_pings_total", "Pings ignored because a newer seq was stored")
ASSIGNMENTS = Counter("ridehail_matching_assignments_total", "Rides assigned", ["mode"])
EXPIRED = Counter("ridehail_matching_expired_total", "Rides expired without a driver")
CLAIM_CONFLICTS = Counter(
    "ridehail_matching_claim_conflicts_total", "Driver claims refused because the driver was no longer free"
)
OFFERS = Counter(
    "ridehail_matching_offers_total",
    "Driver offers by outcome (sent, accepted, declined, timed_out, silent: the driver stopped pinging, "
    "ignored: late or duplicate answers)",
    ["outcome"],
)
OFFER_ACCEPTANCE = Gauge("ridehail_matching_offer_acceptance_ratio", "Accepted / answered-or-timed-out offers")
OFFER_LATENCY = Histogram(
    "ridehail_matching_offer_latency_seconds",
    "Offer committed to the driver's answer applied",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
)
ASSIGN_LATENCY = Histogram(
    "ridehail_matching_assign_latency_seconds",
    "Request time (event ts) to assignment commit",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PICKUP_ETA = Histogram(
    "ridehail_matching_pickup_eta_seconds",
    "Estimated pickup ETA of each assignment",
    buckets=(30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800),
)
SOLVE_SECONDS = Histogram(
    "ridehail_matching_solve_seconds",
    "Time to compute one assignment round (ETA matrix + solver)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
DRIVERS_AVAILABLE = Gauge(
    "ridehail_matching_drivers_available", "Present drivers that are available and hold no ride (candidates)"
)
DRIVERS_PRESENT = Gauge("ridehail_matching_drivers_present", "Drivers whose newest ping is within the presence TTL")
DRIVERS_SILENT_ON_RIDE = Gauge(
    "ridehail_matching_drivers_silent_on_ride", "Drivers that hold a ride (offered, to pickup, on trip) but went silent"
)
RIDES_WAITING = Gauge("ridehail_matching_rides_waiting", "Requested rides waiting for a driver")
EVENTS_PER_S = Gauge("ridehail_matching_events_per_second", "Events applied per second (last 5 s)")


class RateMeter:
    """Events per second over a sliding window of a few seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._marks: deque[tuple[float, int]] = deque()
        self._total = 0

    def add(self, n: int) -> None:
        now = time.monotonic()
        self._marks.append((now, self._total))  # total before this batch
        self._total += n
        self._trim(now)

    def _trim(self, now: float) -> None:
        while len(self._marks) > 1 and now - self._marks[0][0] > self.window_s:
            self._marks.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        self._trim(now)
        if not self._marks:
            return 0.0
        first_t, first_total = self._marks[0]
        span = max(now - first_t, 1.0)
        if now - first_t > self.window_s:
            return 0.0
        return (self._total - first_total) / span
