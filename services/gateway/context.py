"""What the gateway's HTTP routes and websocket handler share (``app.state.ctx``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.auth_tokens import TokenVerifier
from ridehail.common.kafka import EventProducer
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.tickets import TicketStore


@dataclass
class GatewayContext:
    settings: GatewaySettings
    session_factory: async_sessionmaker[AsyncSession] | None
    verifier: TokenVerifier
    producer: EventProducer | None
    tickets: TicketStore = field(default_factory=TicketStore)
    relay: Any = None  # the OutboxRelay of this process, woken after a ride request commits
    feed: Any = None  # the LiveFeed, for readiness
    hub: Any = None  # the Hub, for stats
    stats: Any = None  # the StatsPublisher (latest stats frame)
