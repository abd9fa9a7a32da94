"""One-time websocket tickets: ``POST /api/ws-ticket`` (with a bearer token) returns a short-lived
random ticket the browser sends as its first websocket message instead of the token itself."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from ridehail.common.auth_tokens import Principal

TICKET_TTL_S = 30.0
MAX_TICKETS = 10_000


@dataclass(frozen=True, slots=True)
class _Ticket:
    principal: Principal
    expires: float


class TicketStore:
    def __init__(self, ttl_s: float = TICKET_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._tickets: dict[str, _Ticket] = {}

    def issue(self, principal: Principal) -> str:
        now = time.monotonic()
        if len(self._tickets) >= MAX_TICKETS:
            self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}
            while len(self._tickets) >= MAX_TICKETS:
                self._tickets.pop(next(iter(self._tickets)))
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = _Ticket(principal, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str) -> Principal | None:
        """The ticket's principal if it exists and has not expired; a ticket works once."""
        found = self._tickets.pop(ticket, None)
        if found is None or found.expires < time.monotonic():
            return None
        if found.principal.exp <= time.time():
            return None
        return found.principal
