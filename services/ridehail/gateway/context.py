"""What the gateway's HTTP routes and websocket handler share (``app.state.ctx``), typed, and the
FastAPI dependencies that hand its parts to the routes (the auth service's pattern)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ridehail.common.auth_deps import authenticate
from ridehail.common.auth_tokens import Principal, TokenVerifier
from ridehail.common.kafka import EventProducer
from ridehail.domain.errors import TooManyRequests, Unavailable
from ridehail.gateway.rate_limits import RateLimiter
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.tickets import TicketStore

if TYPE_CHECKING:
    from ridehail.common.outbox import OutboxRelay
    from ridehail.gateway.feed import LiveFeed
    from ridehail.gateway.hub import Hub
    from ridehail.gateway.quote_book import QuoteWriter
    from ridehail.gateway.stats import StatsPublisher


@dataclass
class GatewayContext:
    settings: GatewaySettings
    session_factory: async_sessionmaker[AsyncSession] | None
    verifier: TokenVerifier
    producer: EventProducer | None
    tickets: TicketStore = field(default_factory=TicketStore)
    relay: OutboxRelay | None = None  # this process's outbox relay, woken after a ride request commits
    feed: LiveFeed | None = None  # the live feed consumer, for readiness
    hub: Hub | None = None  # the fan-out hub: cars, ride events, surge values
    stats: StatsPublisher | None = None  # the latest stats frame
    quote_writer: QuoteWriter | None = None  # group commit of quotes (made on first use)
    ride_limiter: RateLimiter | None = None  # per-rider ride request limit (made on first use)

    def ride_request_allowed(self, rider_id: str) -> None:
        """Count one ride request of ``rider_id``; :class:`TooManyRequests` (429) beyond the limit."""
        if self.ride_limiter is None:
            self.ride_limiter = RateLimiter(self.settings.ride_requests_per_minute)
        wait = self.ride_limiter.hit(rider_id)
        if wait is not None:
            per_minute = self.settings.ride_requests_per_minute
            raise TooManyRequests(f"too many ride requests (at most {per_minute} per minute): retry later", wait)

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    def surge_at(self, lat: float, lon: float) -> tuple[str, float]:
        """(H3 cell, multiplier) at a point; 1.0 before the feed delivered any surge."""
        if self.hub is None:
            from ridehail.domain.surge import cell_at

            return cell_at(lat, lon, self.settings.pricing_resolution), 1.0
        return self.hub.surge_at(lat, lon)


def get_context(request: Request) -> GatewayContext:
    ctx: GatewayContext = request.app.state.ctx
    return ctx


Context = Annotated[GatewayContext, Depends(get_context)]


def get_sessions(ctx: Context) -> async_sessionmaker[AsyncSession]:
    if ctx.session_factory is None:
        raise Unavailable("this needs the database, which is not configured")
    return ctx.session_factory


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]


def _role_guard(roles: frozenset[str]):  # type: ignore[no-untyped-def]
    async def dependency(request: Request, ctx: Context) -> Principal:
        return await authenticate(request, ctx.verifier, roles)

    return dependency


async def _live_viewer(request: Request, ctx: Context) -> Principal:
    return await authenticate(
        request,
        ctx.verifier,
        ctx.settings.ws_allowed_roles,
        forbidden_reason="role {role!r} may not watch the live feed",
    )


Rider = Annotated[Principal, Depends(_role_guard(frozenset({"rider"})))]
RiderOrAdmin = Annotated[Principal, Depends(_role_guard(frozenset({"rider", "admin"})))]
LiveViewer = Annotated[Principal, Depends(_live_viewer)]
