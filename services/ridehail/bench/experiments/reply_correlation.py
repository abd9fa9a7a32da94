"""Request/reply bookkeeping over Kafka (pure: no broker, no clock of its own).

Every request carries a correlation id. While the caller waits, the id is *pending*; an answer
within the caller's time-out settles it as *answered*. When the caller gives up, the id moves to
*expired*, not forgotten: a reply that arrives afterwards is a ``late`` reply (the responder did
the work, nobody was listening), counted per run tag. A reply whose id was never sent by this
requester (or answered twice) is ``unmatched``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

BENCH_TOPIC_PREFIX = "bench.reply."
HEADER_CORRELATION = "correlation-id"
HEADER_REPLY_TO = "reply-to"  # the requester's reply topic
HEADER_REQUESTER = "requester"  # the key (and partition) of the requester on that topic


def request_topic(operation: str) -> str:
    """The bench-only request topic of one operation (``login``, ``ride``)."""
    return f"{BENCH_TOPIC_PREFIX}requests.{operation}"


def reply_topic(requester: str) -> str:
    """The requester's own reply topic (one partition; only this requester reads it)."""
    return f"{BENCH_TOPIC_PREFIX}replies.{requester}"


@dataclass
class Pending:
    tag: str
    due: float
    future: asyncio.Future[Any] | None = None


@dataclass
class Correlator:
    """Pending, answered and expired correlation ids of one requester."""

    pending: dict[str, Pending] = field(default_factory=dict)
    expired: dict[str, str] = field(default_factory=dict)  # correlation id -> run tag
    late: dict[str, int] = field(default_factory=dict)  # run tag -> replies after the caller gave up
    late_replies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # tag -> (due, arrived)
    expired_due: dict[str, float] = field(default_factory=dict)
    unmatched: int = 0
    answered: int = 0

    def open(self, correlation_id: str, tag: str, due: float, future: asyncio.Future[Any] | None = None) -> None:
        if correlation_id in self.pending or correlation_id in self.expired:
            raise ValueError(f"correlation id {correlation_id!r} used twice")
        self.pending[correlation_id] = Pending(tag, due, future)

    def expire(self, correlation_id: str) -> bool:
        """The caller gave up on ``correlation_id``; False if it was already settled."""
        entry = self.pending.pop(correlation_id, None)
        if entry is None:
            return False
        self.expired[correlation_id] = entry.tag
        self.expired_due[correlation_id] = entry.due
        if entry.future is not None and not entry.future.done():
            entry.future.cancel()
        return True

    def reply(self, correlation_id: str, body: Any, arrived: float) -> str:
        """Settle a reply: ``answered`` (the caller's future gets ``(arrived, body)``), ``late`` or
        ``unmatched``."""
        entry = self.pending.pop(correlation_id, None)
        if entry is not None:
            self.answered += 1
            if entry.future is not None and not entry.future.done():
                entry.future.set_result((arrived, body))
            return "answered"
        tag = self.expired.pop(correlation_id, None)
        if tag is not None:
            self.late[tag] = self.late.get(tag, 0) + 1
            due = self.expired_due.pop(correlation_id, arrived)
            self.late_replies.setdefault(tag, []).append((due, arrived))
            return "late"
        self.unmatched += 1
        return "unmatched"

    def late_for(self, tag: str) -> int:
        return self.late.get(tag, 0)

    def still_expired(self, tag: str) -> int:
        """Requests of ``tag`` the caller gave up on that have had no reply (yet)."""
        return sum(1 for t in self.expired.values() if t == tag)

    def late_between(self, tag: str, start: float, end: float) -> list[tuple[float, float]]:
        """Late replies of ``tag`` whose request was due in ``[start, end)``: (due, arrived)."""
        return [(d, a) for d, a in self.late_replies.get(tag, []) if start <= d < end]
