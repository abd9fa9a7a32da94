"""``ridehail bench gateway``: the live feed under 10,000 cars at 1 Hz and 100 full-city clients.

Three processes on one machine, so the numbers include everything a real run pays:

* a **gateway** child: the real :class:`~ridehail.gateway.hub.Hub`, Kafka live feed, frame loop and
  websocket server (no HTTP, no database: they are not on this path);
* a **producer** child: ``drivers`` pings per second, each stamped with its creation time;
* this process: ``clients`` websocket clients with a full-city viewport, timing every sampled car
  entry from ping creation to receipt (``e2e``).

Phases: warm-up; steady state (``e2e_p50_ms``/``e2e_p99_ms``, ``deliveries_per_s``); the same with
one client that never reads (``slow_client_p99_ms``, gateway memory over ``slow_seconds``); then
the gateway process sends same-size frames with plain ``websockets.broadcast`` to the same clients
as fast as they drain (``raw_broadcast_per_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from ridehail.bench.gateway_children import gateway_child, producer_child, run_on_uvloop
from ridehail.common.ports import free_port

SAMPLE_EVERY = 10  # time one car entry in ten (per timing client) for the latency distribution
PAIRS, WINDOW_S = 6, 5.0  # interleaved windows without / with a never-reading client
TIMING_CLIENTS = 10  # clients that parse and time frames; the others only read and count


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(p * len(s))) - 1))], 2)


# -- clients (this process) ---------------------------------------------------------------------------
@dataclass(slots=True)
class StepFrames:
    """The frames that brought one ping time's first deliveries: when the first and the last came."""

    first_ms: float
    last_ms: float
    frames: int = 1


@dataclass
class ClientStats:
    frames: int = 0
    car_updates: int = 0
    bytes: int = 0
    raw: int = 0
    sizes: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    resent: int = 0  # car entries carrying a ping this client already had (a ride event, a car gone silent)
    newest_ts: dict[str, int] = field(default_factory=dict)  # car -> newest ping time seen
    measuring: bool = False
    timing: bool = True  # parse frames and time car entries (else only count frames and bytes)
    # ping time -> its frames: with one simulator, whose step stamps all its pings with one time,
    # how many frames brought each step (None: not tracked)
    steps: dict[int, StepFrames] | None = None

    def note_steps(self, pinged: list[int], now_ms: float) -> None:
        """Count, per ping time, the frames that brought its first deliveries."""
        if self.steps is None:
            return
        for ts in set(pinged):
            seen = self.steps.get(ts)
            if seen is None:
                self.steps[ts] = StepFrames(now_ms, now_ms)
            else:
                seen.last_ms = now_ms
                seen.frames += 1

    def new_pings(self, cars: list[list[Any]]) -> list[int]:
        """The ping times of the entries that bring this client a ping it has not had: GPS -> client
        latency is the first delivery of a ping. An entry re-sent because its car changed state (an
        offer, an assignment, no ping for a while) carries an already delivered ping's time."""
        newest = self.newest_ts
        out = []
        for c in cars:
            car_id, ts = c[0], c[4]
            if ts > newest.get(car_id, -1):
                newest[car_id] = ts
                out.append(ts)
        resent = len(cars) - len(out)
        if self.measuring:
            self.resent += resent
        return out


async def watch_feed(url: str, bbox: list[float], stats: ClientStats, stop: asyncio.Event) -> None:
    """One anonymous map client on ``bbox``: counts frames and times sampled car entries (ping -> here)."""
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, max_queue=64) as ws:
        await ws.send('{"t":"auth"}')
        await ws.send(orjson.dumps({"t": "sub", "bbox": bbox}).decode())
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(decode=False), timeout=0.5)
            except TimeoutError:
                continue
            now_ms = time.time_ns() / 1_000_000
            if raw[:8] == b'{"t":"r"':
                stats.raw += 1
                continue
            if raw[:8] != b'{"t":"f"':
                continue
            stats.frames += 1
            stats.bytes += len(raw)
            if not stats.timing:
                continue  # a counting client: reads every byte, parses nothing (keeps this process light)
            cars = orjson.loads(raw)["c"]
            stats.car_updates += len(cars)
            pinged = stats.new_pings(cars)
            if stats.measuring:
                if len(stats.sizes) < 2000:
                    stats.sizes.append(len(raw))
                stats.latencies.extend(now_ms - ts for ts in pinged[::SAMPLE_EVERY])
                stats.note_steps(pinged, now_ms)


def step_delivery(steps: dict[int, StepFrames]) -> dict[str, Any]:
    """How the pings of one ping time (one simulator step) reached the client: in how many frames,
    and how far apart the first and the last of those frames came."""
    spreads = [s.last_ms - s.first_ms for s in steps.values()]
    first_ages = [s.first_ms - ts for ts, s in steps.items()]
    last_ages = [s.last_ms - ts for ts, s in steps.items()]
    split = sum(1 for s in steps.values() if s.frames > 1)
    return {
        "steps": len(steps),
        "in_two_or_more_frames_share": round(split / len(steps), 3) if steps else None,
        "frames_max": max((s.frames for s in steps.values()), default=0),
        "spread_p50_ms": _pct(spreads, 0.50),
        "spread_p99_ms": _pct(spreads, 0.99),
        "first_frame_age_p50_ms": _pct(first_ages, 0.50),
        "first_frame_age_p99_ms": _pct(first_ages, 0.99),
        "last_frame_age_p50_ms": _pct(last_ages, 0.50),
        "last_frame_age_p99_ms": _pct(last_ages, 0.99),
        "what": "car entries grouped by ping time (a simulator step stamps all its pings with one time); "
        "spread: from the first frame that brought a step's pings to the last; age: from the ping time "
        "to the first (last) of those frames",
    }


def city_bbox() -> list[float]:
    """A viewport ``[west, south, east, north]`` a little larger than the whole service area."""
    from ridehail.domain.geo import SERVICE_AREA

    a = SERVICE_AREA
    return [a.min_lon - 0.01, a.min_lat - 0.01, a.max_lon + 0.01, a.max_lat + 0.01]


def _never_reading_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    # a masked client text frame {"t":"auth"} then a full-city subscription; never read after that
    for text in (b'{"t":"auth"}', b'{"t":"sub","bbox":[11.8,57.6,12.1,57.8]}'):
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
        sock.sendall(bytes([0x81, 0x80 | len(text)]) + mask + payload)
    return sock


def run_bench(
    drivers: int,
    clients: int,
    seconds: float,
    slow_seconds: float,
    raw_seconds: float,
    bootstrap: str | None,
) -> dict[str, Any]:
    import psutil

    from ridehail.common.broker import start_broker, stop_process
    from ridehail.common.topics import ensure_topics
    from ridehail.gateway.settings import GatewaySettings

    load_start = round(os.getloadavg()[0], 2)  # the machine is shared: say how busy it was
    broker_proc = None
    if bootstrap is None:
        bport = free_port()
        broker_proc = start_broker(port=bport, log_file=Path(os.devnull))
        bootstrap = f"127.0.0.1:{bport}"
    ensure_topics(bootstrap)
    ctx = mp.get_context("spawn")
    port = free_port()
    parent, child = ctx.Pipe()
    # the never-reading client stays connected (collapsed) for all of slow_seconds: the close after
    # RIDEHAIL_WS_SLOW_CLIENT_GRACE_S is what the integration tests check
    grace = slow_seconds + 30
    gateway = ctx.Process(target=gateway_child, args=(bootstrap, port, child, grace), daemon=True)
    gateway.start()
    gw = psutil.Process(gateway.pid)
    producer = None
    try:
        deadline = time.monotonic() + 30
        while True:
            parent.send(("assigned?",))
            if parent.recv():
                break
            if time.monotonic() > deadline:
                raise RuntimeError("gateway live feed never got its partitions")
            time.sleep(0.2)
        total = 5 + seconds + slow_seconds + 2 * PAIRS * WINDOW_S + raw_seconds + 15
        producer = ctx.Process(target=producer_child, args=(bootstrap, drivers, time.time() + total), daemon=True)
        producer.start()
        bbox = city_bbox()
        result: dict[str, Any] = run_on_uvloop(
            _drive_clients(
                f"ws://127.0.0.1:{port}/", bbox, clients, seconds, slow_seconds, raw_seconds, port, parent, gw
            )
        )
    finally:
        with contextlib.suppress(Exception):
            parent.send(("stop",))
            if parent.poll(10):
                parent.recv()
        gateway.join(5)
        if gateway.is_alive():
            gateway.kill()
        if producer is not None:
            producer.kill()
            producer.join(5)
        if broker_proc is not None:
            stop_process(broker_proc)
    result.update(
        {
            "load_avg_1m_start": load_start,
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "drivers": drivers,
            "clients": clients,
            "ping_hz": 1,
            "frame_interval_ms": GatewaySettings().frame_interval_ms,  # what the gateway child ran with
            "cpu_count": os.cpu_count(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return result


async def _drive_clients(
    url: str,
    bbox: list[float],
    n: int,
    seconds: float,
    slow_seconds: float,
    raw_seconds: float,
    port: int,
    ctl: Connection,
    gw: Any,
) -> dict[str, Any]:
    stop = asyncio.Event()
    stats = [ClientStats(timing=i < TIMING_CLIENTS) for i in range(n)]
    timing = [s for s in stats if s.timing]
    tasks = [asyncio.create_task(watch_feed(url, bbox, s, stop)) for s in stats]
    me = __import__("psutil").Process()

    def cpu_s(p: Any) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    async def ask(cmd: tuple[Any, ...], timeout: float = 120) -> Any:
        ctl.send(cmd)
        return await asyncio.to_thread(lambda: ctl.recv() if ctl.poll(timeout) else None)

    def begin() -> tuple[float, int, int]:
        for s in stats:
            s.latencies.clear()
            s.measuring = True
        return time.monotonic(), sum(s.frames for s in stats), sum(s.car_updates for s in stats)

    await asyncio.sleep(5)  # warm-up: snapshots, caches, the producer at full rate
    if sum(s.frames for s in stats) == 0:
        raise RuntimeError("no frame reached any client during the warm-up")

    # steady state
    await ask(("reset",))
    gw_cpu0, me_cpu0 = cpu_s(gw), cpu_s(me)
    t0, f0, c0 = begin()
    b0 = sum(s.bytes for s in stats)
    rss_start = gw.memory_info().rss
    await asyncio.sleep(seconds)
    dt = time.monotonic() - t0
    steady_lat = [x for s in stats for x in s.latencies]
    frames = sum(s.frames for s in stats) - f0
    updates = (sum(s.car_updates for s in stats) - c0) * n / len(timing)
    bytes_in = sum(s.bytes for s in stats) - b0
    gw_cpu, client_cpu = 100 * (cpu_s(gw) - gw_cpu0) / dt, 100 * (cpu_s(me) - me_cpu0) / dt
    sizes = [x for s in stats for x in s.sizes]
    steady_gw = await ask(("counters",))
    for s in stats:
        s.measuring = False

    # plain websockets.broadcast of same-size frames to the same clients
    size = int(statistics.median(sizes)) if sizes else 1000
    r0 = sum(s.raw for s in stats)
    rt = time.monotonic()
    raw_reply = await ask(("raw", size, raw_seconds), timeout=raw_seconds + 60)
    raw_received = sum(s.raw for s in stats) - r0
    raw_dt = time.monotonic() - rt - 1.3  # minus the switch-over pause and the drain waits
    await asyncio.sleep(2)  # the hub is back: snapshots for everyone, then steady again

    # one client never reads
    slow = _never_reading_socket(port)
    t1, _, _ = begin()
    rss_max = rss = gw.memory_info().rss
    while time.monotonic() - t1 < slow_seconds:
        await asyncio.sleep(1)
        rss = gw.memory_info().rss
        rss_max = max(rss_max, rss)
    slow_lat = [x for s in stats for x in s.latencies]
    counters = await ask(("counters",))
    slow.close()
    for s in stats:
        s.measuring = False

    # the machine is shared and its load drifts: compare interleaved windows without (A) and with (B)
    # a fresh never-reading client, so drift hits both sides alike
    await asyncio.sleep(1)
    lat_a: list[float] = []
    lat_b: list[float] = []
    gw_a: list[float] = []
    gw_b: list[float] = []
    for _ in range(PAIRS):
        await ask(("reset",))
        begin()
        await asyncio.sleep(WINDOW_S)
        lat_a += [x for s in stats for x in s.latencies]
        gw_a += (await ask(("counters",)) or {}).get("write_latency_ms", [])
        extra = _never_reading_socket(port)
        await ask(("reset",))
        begin()
        await asyncio.sleep(WINDOW_S)
        lat_b += [x for s in stats for x in s.latencies]
        gw_b += (await ask(("counters",)) or {}).get("write_latency_ms", [])
        extra.close()
    for s in stats:
        s.measuring = False

    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)

    p99_a, p99_b = _pct(lat_a, 0.99), _pct(lat_b, 0.99)
    return {
        "e2e_p50_ms": _pct(steady_lat, 0.50),
        "e2e_p99_ms": _pct(steady_lat, 0.99),
        "e2e_max_ms": round(max(steady_lat), 2) if steady_lat else None,
        "e2e_samples": len(steady_lat),
        "deliveries_per_s": round(frames / dt, 1),
        "car_updates_per_s": round(updates / dt, 1),
        "bytes_out_per_s": round(bytes_in / dt),
        "timing_clients": len(timing),
        "frame_bytes_median": size,
        "raw_broadcast_per_s": round(raw_received / max(raw_dt, 1e-3), 1),
        "raw_broadcast_sent": (raw_reply or {}).get("sent"),
        "raw_vs_needed_ratio": round(raw_received / max(raw_dt, 1e-3) / max(frames / dt, 1e-3), 1),
        "gateway_write_p50_ms": _pct(steady_gw["write_latency_ms"], 0.50) if steady_gw else None,
        "gateway_write_p99_ms": _pct(steady_gw["write_latency_ms"], 0.99) if steady_gw else None,
        "gateway_feed_lag": steady_gw["feed_lag"] if steady_gw else None,
        "slow_client_p99_ms": p99_b,
        "slow_client_baseline_p99_ms": p99_a,
        "slow_client_p99_increase_pct": round(100 * (p99_b - p99_a) / p99_a, 1) if p99_a and p99_b else None,
        "slow_client_windows": f"{PAIRS} x ({WINDOW_S:g} s without, {WINDOW_S:g} s with)",
        "slow_client_gateway_write_p99_ms": _pct(gw_b, 0.99),
        "slow_client_baseline_gateway_write_p99_ms": _pct(gw_a, 0.99),
        "slow_60s_e2e_p50_ms": _pct(slow_lat, 0.50),
        "slow_60s_e2e_p99_ms": _pct(slow_lat, 0.99),
        "slow_client_connected_s": slow_seconds,
        "slow_client_frames_collapsed": counters["collapsed"] if counters else None,
        "slow_client_closed_by_grace": bool(counters and counters["slow_closed"] >= 1),
        "gateway_rss_mb_start": round(rss_start / 2**20, 1),
        "gateway_rss_mb_with_slow_client_max": round(rss_max / 2**20, 1),
        "gateway_rss_mb_with_slow_client_end": round(rss / 2**20, 1),
        "slow_seconds": slow_seconds,
        "gateway_cpu_percent": round(gw_cpu, 1),
        "clients_process_cpu_percent": round(client_cpu, 1),
        "seconds": seconds,
    }


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
