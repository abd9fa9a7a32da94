"""Offer bookkeeping for /metrics and /stats: how many offers went out, how they ended, how long
drivers took to answer. Updated after each transaction commits (never for rolled-back work)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ridehail.matching import metrics as m


class OfferStats:
    def __init__(self, window: int = 1000) -> None:
        self.sent_total = 0
        self.accepted = 0
        self.declined = 0
        self.timed_out_total = 0
        self.silent_total = 0  # withdrawn because the driver went silent
        self.ignored_total = 0
        self._latency_ms: deque[float] = deque(maxlen=window)  # the latest answers

    def sent(self) -> None:
        self.sent_total += 1
        m.OFFERS.labels("sent").inc()

    def answered(self, accepted: bool, latency_ms: float) -> None:
        if accepted:
            self.accepted += 1
        else:
            self.declined += 1
        m.OFFERS.labels("accepted" if accepted else "declined").inc()
        latency = max(float(latency_ms), 0.0)
        self._latency_ms.append(latency)
        m.OFFER_LATENCY.observe(latency / 1000)
        m.OFFER_ACCEPTANCE.set(self.acceptance_rate)

    def timed_out(self) -> None:
        self.timed_out_total += 1
        m.OFFERS.labels("timed_out").inc()
        m.OFFER_ACCEPTANCE.set(self.acceptance_rate)

    def silent(self) -> None:
        self.silent_total += 1
        m.OFFERS.labels("silent").inc()
        m.OFFER_ACCEPTANCE.set(self.acceptance_rate)

    def ignored(self) -> None:
        self.ignored_total += 1
        m.OFFERS.labels("ignored").inc()

    @property
    def acceptance_rate(self) -> float:
        """Accepted over every offer that ended (accepted, declined, timed out or withdrawn from a silent driver)."""
        ended = self.accepted + self.declined + self.timed_out_total + self.silent_total
        return self.accepted / ended if ended else 0.0

    def snapshot(self) -> dict[str, Any]:
        latencies = np.array(self._latency_ms) if self._latency_ms else None
        return {
            "sent": self.sent_total,
            "accepted": self.accepted,
            "declined": self.declined,
            "timed_out": self.timed_out_total,
            "silent": self.silent_total,
            "ignored": self.ignored_total,
            "acceptance_rate": round(self.acceptance_rate, 3),
            "answer_p50_ms": None if latencies is None else round(float(np.percentile(latencies, 50)), 1),
            "answer_p99_ms": None if latencies is None else round(float(np.percentile(latencies, 99)), 1),
        }
