"""``ridehail bench map``: the live map page in headless Chromium with ``cars`` cars in view.

Everything on the real path, on this machine: an embedded broker, the **real simulator**
(``SimulatorService``, no riders, no churn: every car pings once a second) producing to Kafka, the
**real gateway** (``ridehail serve gateway``: map page, static files, live feed, frame loop,
websocket; its Postgres is unreachable on purpose, nothing on this path needs it), and one headless
Chromium (Debian's, driven by Python playwright) showing the page fitted to the service area.

Measured in the page over ``seconds`` once the cars are there: frames per second
(``requestAnimationFrame`` callbacks / wall time), how many times the cars were repainted, how many
cars the page had and drew, and the page's own GPS -> browser latency (``panel.js``: per stats
window of ~1 s, ``Date.now() - ping_ts`` of each car entry that brings a newer ping than the page
had, outside the first frame after a subscription (``map.js``); the JSON gives the median of
the windows' p50 and p99 and the worst window). All processes share the machine, so the load
average and CPU count go into the JSON, with each process's CPU use over the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from ridehail.common.broker import start_broker, stop_process
from ridehail.common.ports import free_port
from ridehail.common.topics import ensure_topics

RENDERERS = ("canvas", "markers")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]  # as the e2e tests
VIEWPORT = {"width": 1280, "height": 800}

# counts requestAnimationFrame callbacks from the moment it is installed (the page's CSP forbids
# eval, but page.evaluate goes through the DevTools protocol)
FPS_PROBE = """() => {
  const s = window.__rhBench = { frames: 0, worst: 0, long: 0, last: performance.now() };
  function tick(t) {
    const d = t - s.last; s.last = t; s.frames++;
    if (d > s.worst) s.worst = d;
    if (d > 50) s.long++;
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
}"""
SAMPLE = """() => {
  const r = window.__ridehail, b = window.__rhBench, s = r.stats();
  return { t: performance.now(), frames: b ? b.frames : 0, worst: b ? b.worst : 0, long: b ? b.long : 0,
           cars: r.carCount(), drawn: r.carsDrawn(), draws: r.draws(), p50: s.p50, p99: s.p99,
           feed_frames: s.frames, renderer: r.renderer(), step: r.carTiming() };
}"""
# the canvas drawer's pixels where Leaflet itself projects a sample of cars (null for the markers)
PLACED = """() => {
  const r = window.__ridehail, m = r.map, c = m.getPane('cars').querySelector('canvas.rh-cars-canvas');
  if (r.renderer() !== 'canvas' || !c) return null;
  const g = c.getContext('2d'), dpr = window.devicePixelRatio || 1, size = m.getSize(), pos = r.positions();
  let n = 0, hit = 0;
  for (const id in pos) {
    const p = m.latLngToContainerPoint(pos[id]);
    if (p.x < 10 || p.y < 10 || p.x > size.x - 10 || p.y > size.y - 10) continue;
    if (g.getImageData(Math.round(p.x * dpr), Math.round(p.y * dpr), 1, 1).data[3] > 0) hit++;
    if (++n >= 200) break;
  }
  return n ? hit / n : null;
}"""
FIT = """(bbox) => { const m = window.__ridehail.map;
  m.fitBounds([[bbox[1], bbox[0]], [bbox[3], bbox[2]]], { animate: false });
  return m.getZoom(); }"""


def chromium_path() -> Path:
    """CHROMIUM_PATH, Debian's /usr/bin/chromium or one on PATH."""
    candidates = [os.environ.get("CHROMIUM_PATH", ""), "/usr/bin/chromium"]
    candidates += [shutil.which(n) or "" for n in ("chromium", "chromium-browser", "google-chrome")]
    for c in candidates:
        if c and Path(c).exists():
            return Path(c)
    raise RuntimeError("no Chromium found: apt-get install -y chromium (or set CHROMIUM_PATH)")


# -- the simulator child (spawned) ----------------------------------------------------------------------
def simulator_child(bootstrap: str, drivers: int, seed: int, stop: Any) -> None:
    from ridehail.common.logging import configure_logging
    from ridehail.common.settings import load_settings
    from ridehail.simulator.settings import SimulatorSettings

    configure_logging("WARNING")
    settings = load_settings(
        SimulatorSettings,
        kafka_bootstrap=bootstrap,
        drivers=drivers,
        interval=1.0,
        seed=seed,
        riders_per_min=0.0,
        log_level="WARNING",
    )
    asyncio.run(_simulate(settings, stop))


async def _simulate(settings: Any, stop_flag: Any) -> None:
    from ridehail.simulator.main import SimulatorService

    # like `bench simulator`: fleet + ride-event consumer, no HTTP, no churn (every car pings)
    service = SimulatorService(
        settings, serve_http=False, consume=True, instance="simulator-map-bench", mean_online_min=0.0
    )
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    while not stop_flag.is_set() and not task.done():
        await asyncio.sleep(0.2)
    stop.set()
    await task


# -- the gateway (a real `ridehail serve gateway`) --------------------------------------------------------
def gateway_env(bootstrap: str, http_port: int, ws_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RIDEHAIL_KAFKA_BOOTSTRAP": bootstrap,
            "RIDEHAIL_GATEWAY_PORT": str(http_port),
            "RIDEHAIL_GATEWAY_WS_PORT": str(ws_port),
            "RIDEHAIL_WS_PUBLIC_MAP": "true",  # the page watches anonymously (cars only)
            # nothing on the map's path needs Postgres; a port nobody listens on (the gateway
            # connects lazily and its outbox relay waits for it)
            "RIDEHAIL_DATABASE_URL": f"postgresql+asyncpg://ridehail@127.0.0.1:{free_port()}/none",
            "RIDEHAIL_AUTH_BASE_URL": f"http://127.0.0.1:{free_port()}",
            "RIDEHAIL_MATCHING_STATS_URL": f"http://127.0.0.1:{free_port()}/stats",
            "RIDEHAIL_MAP_TILES": "none",
            "RIDEHAIL_LOG_LEVEL": "WARNING",
        }
    )
    return env


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.3)


@contextlib.contextmanager
def _processes(cars: int, seed: int) -> Iterator[dict[str, Any]]:
    """Broker, gateway and simulator, stopped (all of them) on the way out."""
    broker = gateway = None
    ctx = mp.get_context("spawn")
    sim_stop = ctx.Event()
    sim = None
    try:
        bport = free_port()
        broker = start_broker(port=bport, log_file=Path(os.devnull))
        bootstrap = f"127.0.0.1:{bport}"
        ensure_topics(bootstrap)
        http_port, ws_port = free_port(), free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "ridehail.cli", "serve", "gateway"],
            env=gateway_env(bootstrap, http_port, ws_port),
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{http_port}"
        _wait_http(url + "/healthz", gateway, 60)
        deadline = time.monotonic() + 60
        while not httpx.get(url + "/readyz", timeout=5).json().get("checks", {}).get("live_feed"):
            if time.monotonic() > deadline:  # the feed starts at the latest offset: wait for it
                raise RuntimeError("the gateway's live feed never got its partitions")
            time.sleep(0.3)
        sim = ctx.Process(target=simulator_child, args=(bootstrap, cars, seed, sim_stop), daemon=True)
        sim.start()
        yield {"url": url, "procs": {"broker": broker.pid, "gateway": gateway.pid, "simulator": sim.pid}}
    finally:
        sim_stop.set()
        if sim is not None and sim.pid is not None:
            sim.join(15)
            if sim.is_alive():
                sim.kill()
                sim.join(5)
        if gateway is not None:
            stop_process(gateway, timeout_s=10)
        if broker is not None:
            stop_process(broker)


def _console(message: Any, errors: list[str]) -> None:
    """A console error of the page, with its URL; Chromium's own favicon request (the gateway has
    none) is not the page's."""
    if message.type != "error":
        return
    url = str((message.location or {}).get("url", ""))
    if not url.endswith("/favicon.ico"):
        errors.append(f"console: {message.text} ({url})")


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            t = p.cpu_times()
            total = t.user + t.system
            for c in p.children(recursive=True):  # chromium's renderer/GPU processes, librdkafka is threads
                with contextlib.suppress(psutil.Error):
                    ct = c.cpu_times()
                    total += ct.user + ct.system
            out[name] = total
    return out


def _step_ms(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Mean time of the page's car step (interpolate + draw) between two samples, ms."""
    steps = b["step"]["steps"] - a["step"]["steps"]
    return round((b["step"]["ms"] - a["step"]["ms"]) / steps, 2) if steps else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def run_bench(
    cars: int,
    seconds: float,
    renderer: str = "canvas",
    warmup_s: float = 3.0,
    seed: int = 42,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    from playwright import sync_api

    from ridehail.domain.geo import SERVICE_AREA

    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {RENDERERS}")
    load_start = [round(x, 2) for x in os.getloadavg()]
    a = SERVICE_AREA
    bbox = [a.min_lon, a.min_lat, a.max_lon, a.max_lat]
    errors: list[str] = []
    with _processes(cars, seed) as running, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium_path()), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("console", lambda m: _console(m, errors))
            page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
            query = "" if renderer == "canvas" else f"?renderer={renderer}"
            page.goto(running["url"] + "/" + query)
            deadline = time.monotonic() + 60
            while not page.evaluate("!!(window.__ridehail && window.__ridehail.connected())"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the map never connected its live feed: {errors}")
                time.sleep(0.2)
            zoom = page.evaluate(FIT, bbox)
            # wait for the fleet: the simulator starts its cars within its first second of pings
            want = int(cars * 0.98)
            deadline = time.monotonic() + 120
            while (n := page.evaluate("window.__ridehail.carCount()")) < want:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {n} of {cars} cars reached the page in 120 s")
                progress(f"waiting for cars: {n}/{cars} on the page")
                time.sleep(1)
            time.sleep(warmup_s)
            pids = dict(running["procs"])
            pids["chromium"] = browser_pid()
            page.evaluate(FPS_PROBE)
            cpu0, wall0 = _cpu_s(pids), time.monotonic()
            first = page.evaluate(SAMPLE)
            samples = [first]
            end = wall0 + seconds
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                s = page.evaluate(SAMPLE)
                prev = samples[-1]
                dt = max(1e-3, (s["t"] - prev["t"]) / 1000)
                samples.append(s)
                progress(
                    f"{(s['t'] - first['t']) / 1000:5.1f} s  fps {(s['frames'] - prev['frames']) / dt:5.1f}  "
                    f"repaints/s {(s['draws'] - prev['draws']) / dt:5.1f}  step {_step_ms(prev, s)} ms  "
                    f"cars {s['cars']}  drawn {s['drawn']}  "
                    f"GPS->browser p50 {s['p50']} ms p99 {s['p99']} ms  load {os.getloadavg()[0]:.2f}"
                )
            cpu1, wall = _cpu_s(pids), time.monotonic() - wall0
            last = samples[-1]
            in_view = page.evaluate("window.__ridehail.carsInView()")
            placed = page.evaluate(PLACED)
        finally:
            browser.close()
    page_s = (last["t"] - first["t"]) / 1000
    p50s = [float(s["p50"]) for s in samples if s["p50"] is not None]
    p99s = [float(s["p99"]) for s in samples if s["p99"] is not None]
    fps = round((last["frames"] - first["frames"]) / page_s, 1)
    windows = [
        round((b["frames"] - a["frames"]) * 1000 / max(1e-3, b["t"] - a["t"]), 1)
        for a, b in zip(samples, samples[1:], strict=False)
    ]
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in cpu1 if k in cpu0}
    load_end = [round(x, 2) for x in os.getloadavg()]
    cores = os.cpu_count() or 1
    used = sum(cpu.values()) / 100
    return {
        "cars": cars,
        "cars_on_page": last["cars"],
        "cars_drawn": last["drawn"],
        "cars_in_view": in_view,
        "fps": fps,
        "drawn_where_leaflet_projects": placed,  # share of sampled cars with a painted pixel there
        "fps_per_window": windows,  # one value per progress line (~1 s each)
        "fps_worst_window": min(windows) if windows else None,
        "car_repaints_per_s": round((last["draws"] - first["draws"]) / page_s, 1),
        "car_step_ms_mean": _step_ms(first, last),
        "worst_frame_ms": round(last["worst"], 1),
        "frames_over_50ms": last["long"],
        "gps_to_browser_p50_ms": _median(p50s),
        "gps_to_browser_p99_ms": _median(p99s),
        "gps_to_browser_p99_worst_window_ms": max(p99s) if p99s else None,
        "latency_windows": len(p50s),
        "feed_frames_per_s": round((last["feed_frames"] - first["feed_frames"]) / page_s, 1),
        "renderer": last["renderer"],
        "renderer_requested": renderer,
        "seconds": round(page_s, 2),
        "warmup_s": warmup_s,
        "zoom": zoom,
        "viewport": f"{VIEWPORT['width']}x{VIEWPORT['height']}",
        "browser": "headless Chromium " + browser_version(),
        "browser_args": BROWSER_ARGS,
        "cpu_percent": cpu,  # 100 = one core; chromium includes its renderer and GPU processes
        "cpu_busy_cores_of_machine": round(used, 2),
        "load_average_at_start": load_start,
        "load_average_at_end": load_end,
        "cpu_count": cores,
        "page_errors": errors[:20],
        "path": "simulator -> Kafka (embedded tansu) -> gateway (ridehail serve gateway) -> websocket -> page",
        "note": (
            "one headless Chromium with software rendering, on the same machine as the simulator, broker and "
            "gateway and whatever else runs there (load_average_at_start; cpu_percent per process): the fps "
            "includes CPU contention, not only drawing"
        ),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def browser_pid() -> int:
    """The Chromium browser process playwright started (its children are the renderers, GPU)."""
    me = psutil.Process()
    for c in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            parent = c.parent()
            if "chrom" in c.name().lower() and (parent is None or "chrom" not in parent.name().lower()):
                return c.pid
    return me.pid


_VERSION: dict[str, str] = {}


def browser_version() -> str:
    if "v" not in _VERSION:
        try:
            out = subprocess.run([str(chromium_path()), "--version"], capture_output=True, text=True, timeout=20).stdout
            words = out.split()
            _VERSION["v"] = next((w for w in words if w[:1].isdigit()), "?")
        except (OSError, subprocess.SubprocessError):
            _VERSION["v"] = "?"
    return _VERSION["v"]


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
