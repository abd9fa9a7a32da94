"""``ridehail serve gateway``: HTTP (map page, API, auth proxy) and the live-feed websocket server
in one process, next to the Kafka live feed, the frame loop, the stats publisher and the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import Server
from websockets.asyncio.server import serve as ws_serve
from websockets.typing import Origin

from ridehail.common.auth_tokens import TokenVerifier
from ridehail.common.db import make_engine, make_sessionmaker, wait_for_database
from ridehail.common.health import make_server
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.common.outbox import OutboxRelay
from ridehail.common.service import ServiceRun, run_services
from ridehail.gateway.app import create_app
from ridehail.gateway.context import GatewayContext
from ridehail.gateway.feed import LiveFeed
from ridehail.gateway.hub import Hub
from ridehail.gateway.settings import GatewaySettings
from ridehail.gateway.stats import StatsPublisher
from ridehail.gateway.ws import LiveSocket

log = get_logger("gateway")


async def _first_of(events: tuple[asyncio.Event, ...], timeout_s: float) -> None:
    """Return once any of ``events`` is set, or after ``timeout_s`` (for one event,
    ``asyncio.wait_for(event.wait(), timeout)`` as everywhere else)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def frame_loop(hub: Hub, interval_s: float, stop: asyncio.Event, on_change: bool = False) -> None:
    """Frame rounds, at most one per interval. ``on_change``: once the interval since the last
    round is up, the next round runs as soon as the live feed (or a new subscription) woke the
    hub, so a burst of pings after a quiet spell goes out at once; with nothing new it runs one
    more interval later anyway (silent cars, slow clients catching up). Otherwise rounds follow a
    fixed clock (a slow round shortens the next wait)."""
    next_at = time.monotonic()
    while not stop.is_set():
        next_at += interval_s
        if on_change:
            hub.woken.clear()  # what arrives from here on is in this round or wakes the next
        try:
            hub.frame_round()
        except Exception as exc:  # a bug in one round must not end the live map
            hub.counters.round_errors += 1
            log.error("frame_round_failed", error=repr(exc)[:300])
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at = time.monotonic()
            delay = 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if on_change and not hub.woken.is_set() and not stop.is_set():
            await _first_of((hub.woken, stop), interval_s)
            next_at = time.monotonic()


def make_hub(settings: GatewaySettings) -> Hub:
    return Hub(
        write_limit=settings.ws_write_buffer_limit_bytes,
        slow_grace_s=settings.ws_slow_client_grace_s,
        car_ttl_s=settings.car_ttl_s,
        surge_resolution=settings.pricing_resolution,
        presence_ttl_s=settings.driver_presence_ttl_s,
    )


async def start_ws_server(live: LiveSocket, settings: GatewaySettings, host: str, port: int) -> Server:
    return await ws_serve(
        live.handler,
        host,
        port,
        compression=None,
        ping_interval=settings.ws_ping_interval_s,
        ping_timeout=settings.ws_ping_timeout_s,
        close_timeout=2,
        max_size=max(65536, settings.ws_max_message_bytes),
        max_queue=4,
        write_limit=settings.ws_write_buffer_limit_bytes,
        origins=[*(Origin(o) for o in settings.ws_origins), None],  # None: no Origin sent (not a browser)
    )


async def _supervise(name: str, fn: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``fn`` until stop; if it fails, log and restart it after a short pause."""
    while not stop.is_set():
        try:
            await fn()
            return
        except Exception as exc:
            log.error("task_failed_restarting", task=name, error=repr(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)


async def run(settings: GatewaySettings, stop: asyncio.Event) -> None:
    from ridehail.common.postgres import resolve_database_url

    url, _ = await asyncio.to_thread(resolve_database_url, settings, False)
    engine = make_engine(url)  # connects lazily: /readyz reports the database until it answers
    session_factory = make_sessionmaker(engine)
    producer = EventProducer(settings.bootstrap, "gateway")
    verifier = TokenVerifier(settings.auth_url + "/.well-known/jwks.json")
    ctx = GatewayContext(settings=settings, session_factory=session_factory, verifier=verifier, producer=producer)

    hub = make_hub(settings)
    feed = LiveFeed(settings.bootstrap, hub)
    stats = StatsPublisher(hub, feed, settings.matching_stats, settings.stats_interval_ms / 1000)
    ctx.hub, ctx.feed, ctx.stats = hub, feed, stats
    live = LiveSocket(hub, settings, verifier, ctx.tickets)

    tasks: list[asyncio.Task[None]] = []
    relay = OutboxRelay(session_factory, producer, name="gateway")
    ctx.relay = relay

    async def relay_when_database_answers() -> None:
        await wait_for_database(engine)  # one log line while it is down, not one per retry
        await relay.run(stop)

    tasks.append(asyncio.create_task(_supervise("outbox_relay", relay_when_database_answers, stop)))

    async def seed_surge() -> None:
        from ridehail.gateway.quote_book import load_surge_snapshot
        from ridehail.gateway.quotes_api import trip_router

        if settings.quote_router_at_start:
            await trip_router()  # the quote routing tables (~1 s in a thread), before the first quote asks
        # Long-lived start-up objects: a full GC pass over them stalls every request (trip_router
        # does the same once its tables are built). Move everything built so far out of sight.
        gc.collect()
        gc.freeze()
        await wait_for_database(engine)
        await load_surge_snapshot(session_factory, hub)

    tasks.append(asyncio.create_task(_supervise("surge_snapshot", seed_surge, stop)))

    ws_server = await start_ws_server(live, settings, settings.host, settings.gateway_ws_port)
    http = make_server(create_app(ctx), settings.host, settings.gateway_port)
    tasks += [
        asyncio.create_task(_supervise("live_feed", lambda: feed.run(stop), stop)),
        asyncio.create_task(frame_loop(hub, settings.frame_interval_ms / 1000, stop, settings.frame_on_change)),
        asyncio.create_task(stats.run(stop)),
        asyncio.create_task(http.serve()),
    ]
    log.info(
        "gateway_listening",
        http=f"http://{settings.public_host}:{settings.gateway_port}/",
        ws=f"ws://{settings.public_host}:{settings.gateway_ws_port}/",
    )
    await stop.wait()
    http.should_exit = True
    ws_server.close()
    await ws_server.wait_closed()
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=8)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    producer.close(5)
    await engine.dispose()


SERVICE = ServiceRun("gateway", GatewaySettings, run)  # what ``python -m ridehail.serve`` runs, alone or with others


def serve() -> None:
    run_services([SERVICE])
