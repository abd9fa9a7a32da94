"""The fleet's answers to ride offers: each offered driver accepts (with the configured probability,
if free) or declines after a short think, and the answer goes out once, even if the offer is
delivered again."""

from __future__ import annotations

import random

from ridehail.domain.events import RideOfferAnswered
from ridehail.simulator.drivers import Driver, FleetConfig, PendingOffer, Status


class OfferDesk:
    def __init__(self, rng: random.Random, config: FleetConfig, run_id: str) -> None:
        self._rng = rng
        self._config = config
        self._run_id = run_id
        self.pending: dict[str, PendingOffer] = {}  # ride_id -> the offer this fleet will answer

    def offer(self, d: Driver, ride_id: str, offer_id: str, now: float) -> bool:
        """Queue the answer of ``d`` to an offer; False for a redelivered offer."""
        pending = self.pending.get(ride_id)
        if pending is not None and pending.offer_id == offer_id:
            return False
        busy = d.ride is not None or any(o.driver_id == d.driver_id for o in self.pending.values())
        if busy:
            accepted, reason, delay = False, "driver is busy", 0.0
        elif d.status is Status.OFFLINE:
            accepted, reason, delay = False, "driver is offline", 0.0
        else:
            accepted = self._rng.random() < self._config.accept_probability
            reason = "" if accepted else "driver declined"
            delay = self._rng.uniform(min(0.2, self._config.answer_delay_max_s), self._config.answer_delay_max_s)
        self.pending[ride_id] = PendingOffer(ride_id, offer_id, d.driver_id, now + delay, accepted, reason)
        return True

    def withdraw(self, ride_id: str) -> bool:
        return self.pending.pop(ride_id, None) is not None

    def answers_due(self, now: float, ts: int) -> list[RideOfferAnswered]:
        due: list[RideOfferAnswered] = []
        for ride_id, o in list(self.pending.items()):
            if o.answer_at > now:
                continue
            del self.pending[ride_id]
            due.append(
                RideOfferAnswered(
                    event_id=f"{self._run_id}-ans-{o.offer_id}",  # one answer per offer, even if re-sent
                    ts=ts,
                    ride_id=ride_id,
                    driver_id=o.driver_id,
                    offer_id=o.offer_id,
                    accepted=o.accepted,
                    reason=o.reason,
                )
            )
        return due
