"""Driver presence: a driver is present while its newest ping is younger than the presence TTL
(``RIDEHAIL_DRIVER_PRESENCE_TTL_S``, a few ping intervals). Only present drivers are
candidates; a silent driver is shown offline, comes back with its next ping, is skipped at once
while it holds an offer, and is flagged (not dropped) while it holds a ride.

"Newest ping" is the ping's own time, capped at the moment it was applied:
``last_seen_ms = min(ping ts, applied at)``. The ping's time, so that a backlog read after an
outage does not bring drivers back that went silent meanwhile; capped, so that a clock running
ahead cannot keep a silent driver present. It is stored with the driver's row
(``drivers.last_seen_ms``), so every matching instance, a restarted one included, and the REST
API judge presence the same way, from Postgres.
"""

from __future__ import annotations

OFFLINE = "offline"


def seen_ms(ping_ts_ms: int, applied_ms: int) -> int:
    """When a driver counts as last seen after a ping with ``ping_ts_ms`` applied at ``applied_ms``."""
    return min(ping_ts_ms, applied_ms)


def cutoff_ms(now_ms: int, ttl_s: float) -> int:
    """Drivers last seen before this (epoch ms) are silent."""
    return now_ms - int(ttl_s * 1000)


def is_present(last_seen_ms: int, now_ms: int, ttl_s: float) -> bool:
    return last_seen_ms >= cutoff_ms(now_ms, ttl_s)


def shown_status(status: str, current_ride_id: str | None, present: bool) -> str:
    """The status to show: a silent driver without a ride is ``offline``; a silent driver that
    holds a ride keeps its ride status (it is flagged as not present instead)."""
    if not present and current_ride_id is None:
        return OFFLINE
    return status
