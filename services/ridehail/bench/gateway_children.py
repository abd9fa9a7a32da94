"""``ridehail bench gateway``'s child processes: the real gateway (hub, live feed, frame loop,
websocket server) on a private broker, and the producer of stamped pings."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from multiprocessing.connection import Connection
from typing import Any


# -- gateway child ------------------------------------------------------------------------------------
def gateway_child(bootstrap: str, port: int, ctl: Connection, slow_grace_s: float) -> None:
    from ridehail.common.logging import configure_logging

    configure_logging("WARNING")
    run_on_uvloop(_gateway_main(bootstrap, port, ctl, slow_grace_s))


def run_on_uvloop(coro: Any) -> Any:
    """Run on uvloop like the real service (``run_services``), else on asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _gateway_main(bootstrap: str, port: int, ctl: Connection, slow_grace_s: float) -> None:
    from websockets.asyncio.server import broadcast

    from ridehail.common.auth_tokens import TokenVerifier
    from ridehail.gateway.feed import LiveFeed
    from ridehail.gateway.main import frame_loop, make_hub, start_ws_server
    from ridehail.gateway.settings import GatewaySettings
    from ridehail.gateway.stats import StatsPublisher
    from ridehail.gateway.tickets import TicketStore
    from ridehail.gateway.ws import LiveSocket

    settings = GatewaySettings(
        ws_public_map=True,
        ws_max_clients=10_000,
        ws_max_per_address=10_000,  # every bench client comes from 127.0.0.1
        ws_max_unauthenticated=10_000,
        ws_slow_client_grace_s=slow_grace_s,
    )
    hub = make_hub(settings)
    feed = LiveFeed(bootstrap, hub)
    live = LiveSocket(hub, settings, TokenVerifier("http://127.0.0.1:9/unused"), TicketStore())
    stop, frames_stop = asyncio.Event(), asyncio.Event()
    server = await start_ws_server(live, settings, "127.0.0.1", port)
    tasks = [
        asyncio.create_task(feed.run(stop)),
        asyncio.create_task(frame_loop(hub, settings.frame_interval_ms / 1000, frames_stop, settings.frame_on_change)),
        asyncio.create_task(StatsPublisher(hub, feed, None, 1.0).run(stop)),
    ]
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[Any] = asyncio.Queue()
    threading.Thread(target=lambda: _pump(ctl, loop, commands), daemon=True).start()
    while True:
        cmd = await commands.get()
        if cmd[0] == "assigned?":
            ctl.send(feed.assigned)
        elif cmd[0] == "counters":
            c = hub.counters
            ctl.send(
                {
                    "collapsed": c.collapsed,
                    "slow_closed": c.slow_closed,
                    "clients": len(hub.clients),
                    "feed_lag": feed.lag,
                    "write_latency_ms": list(c.write_latency_ms),
                }
            )
        elif cmd[0] == "reset":
            hub.counters.write_latency_ms.clear()
            ctl.send(True)
        elif cmd[0] == "raw":
            _, size, seconds = cmd
            frames_stop.set()  # the hub pauses; plain broadcast takes over the same connections
            await tasks[1]
            await asyncio.sleep(0.3)
            conns = [c.conn for c in hub.clients]
            frame = b'{"t":"r","pad":"' + b"x" * max(0, size - 17) + b'"}'
            sent = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                # only to clients with a short buffer: this measures drained deliveries, not queued bytes
                ready = [c for c in conns if c.transport is not None and c.transport.get_write_buffer_size() < 2 * size]
                if not ready:
                    await asyncio.sleep(0.0005)
                    continue
                broadcast(ready, frame, text=True)
                sent += len(ready)
                await asyncio.sleep(0)
            await asyncio.sleep(0.5)  # let the clients drain before the hub resumes
            frames_stop = asyncio.Event()
            tasks[1] = asyncio.create_task(
                frame_loop(hub, settings.frame_interval_ms / 1000, frames_stop, settings.frame_on_change)
            )
            ctl.send({"sent": sent})
        elif cmd[0] == "stop":
            stop.set()
            frames_stop.set()
            server.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            ctl.send("stopped")
            return


def _pump(ctl: Connection, loop: asyncio.AbstractEventLoop, q: asyncio.Queue[Any]) -> None:
    while True:
        try:
            cmd = ctl.recv()
        except EOFError:
            cmd = ("stop",)
        loop.call_soon_threadsafe(q.put_nowait, cmd)
        if cmd[0] == "stop":
            return


# -- producer child -----------------------------------------------------------------------------------
def producer_child(bootstrap: str, drivers: int, stop_at: float) -> None:
    from ridehail.common.kafka import EventProducer
    from ridehail.common.logging import configure_logging
    from ridehail.domain.events import DriverLocation, DriverStatus, encode
    from ridehail.domain.geo import SERVICE_AREA
    from ridehail.domain.topics import DRIVER_LOCATION

    configure_logging("WARNING")
    a = SERVICE_AREA
    rng = random.Random(7)
    pos = [[rng.uniform(a.min_lat, a.max_lat), rng.uniform(a.min_lon, a.max_lon)] for _ in range(drivers)]
    statuses: tuple[DriverStatus, ...] = ("available", "to_pickup", "on_trip", "offline")
    ids = [f"bench-{i:05d}" for i in range(drivers)]
    producer = EventProducer(bootstrap, "bench-pings", **{"linger.ms": 2})
    topic = DRIVER_LOCATION.name
    slices = 20  # spread each second's pings over 20 slices of 50 ms
    per_slice = max(1, drivers // slices)
    seq = 0
    next_at = time.monotonic()
    while time.time() < stop_at:
        seq += 1
        for s in range(slices):
            for i in range(s * per_slice, min(drivers, (s + 1) * per_slice)):
                p = pos[i]
                p[0] = min(a.max_lat, max(a.min_lat, p[0] + rng.uniform(-2e-4, 2e-4)))
                p[1] = min(a.max_lon, max(a.min_lon, p[1] + rng.uniform(-3e-4, 3e-4)))
                ev = DriverLocation(driver_id=ids[i], seq=seq, lat=p[0], lon=p[1], status=statuses[i % 4], speed=8.0)
                producer.produce(topic, encode(ev), key=ids[i])
            next_at += 1.0 / slices
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    producer.close(10)
