"""Checks on consumed events before they reach Postgres."""

from __future__ import annotations

from ridehail.common.batch_consumer import Decoded
from ridehail.common.kafka import message_headers
from ridehail.domain.topics import REPLAY_HEADER

BIGINT_MAX = 2**63 - 1


def unstorable(item: Decoded) -> str | None:
    """Why Postgres could not store this (valid-looking) event, or None: NUL characters (text and
    jsonb refuse them) and integers beyond bigint would otherwise fail the whole batch."""
    raw = item.message.value() or b""
    if b"\\u0000" in raw:
        return "NUL character (\\u0000) in a string field"
    event = item.event
    for name in ("ts", "seq"):
        value = getattr(event, name, 0)
        if isinstance(value, int) and value > BIGINT_MAX:
            return f"{name}={value} is beyond the 64-bit range"
    return None


def is_replayed(item: Decoded) -> bool:
    return any(k == REPLAY_HEADER for k, _ in message_headers(item.message))
