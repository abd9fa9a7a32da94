"""``ridehail bench simulator``: the fleet against a real broker, measured.

Runs the simulator service (fleet + ride-event consumer, no HTTP, no riders, no driver churn so
every driver pings) for a warm-up plus ``seconds``, and reports over the measured window: pings
produced per second, pings acknowledged by the broker per second, the process's CPU use in cores
(process CPU seconds / wall seconds, all threads including librdkafka's), and resident memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from ridehail.common.broker import start_broker, stop_process
from ridehail.common.ports import free_port
from ridehail.common.settings import load_settings
from ridehail.common.topics import ensure_topics
from ridehail.simulator.settings import SimulatorSettings


async def _measure(settings: SimulatorSettings, seconds: float, warmup: float) -> dict[str, Any]:
    from ridehail.simulator.main import SimulatorService

    proc = psutil.Process()
    t0 = time.perf_counter()
    service = SimulatorService(
        settings, serve_http=False, consume=True, instance="simulator-bench", mean_online_min=0.0
    )
    build_s = time.perf_counter() - t0
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.sleep(warmup)
    runner, producer = service.runner, service.producer
    w0, c0 = time.perf_counter(), time.process_time()
    p0, d0 = runner.stats.pings, producer.delivered
    lag_at_start = runner.stats.max_lag_s
    runner.stats.max_lag_s = 0.0
    rss_samples: list[float] = []
    end = w0 + seconds
    while time.perf_counter() < end:
        await asyncio.sleep(min(1.0, max(0.0, end - time.perf_counter())))
        rss_samples.append(proc.memory_info().rss / 2**20)
    w1, c1 = time.perf_counter(), time.process_time()
    p1, d1 = runner.stats.pings, producer.delivered
    max_lag = runner.stats.max_lag_s
    stop.set()
    await task
    wall = w1 - w0
    return {
        "drivers": len(service.fleet.drivers),
        "interval_s": service.fleet.config.interval,
        "seconds": round(wall, 2),
        "warmup_s": warmup,
        "pings": p1 - p0,
        "pings_per_s": round((p1 - p0) / wall, 1),
        "delivered_per_s": round((d1 - d0) / wall, 1),
        "delivery_failures": producer.failed,
        "cpu_cores": round((c1 - c0) / wall, 3),
        "rss_mb": round(max(rss_samples), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "max_loop_lag_s": round(max_lag, 3),
        "startup_loop_lag_s": round(lag_at_start, 3),
        "fleet_build_s": round(build_s, 3),
        "seed": service.fleet.seed,
    }


def run_bench(
    drivers: int,
    seconds: float,
    json_path: Path | None,
    bootstrap: str | None,
    interval: float,
    warmup: float,
    seed: int,
) -> dict[str, Any]:
    broker_proc: subprocess.Popen[bytes] | None = None
    log_dir = tempfile.mkdtemp(prefix="ridehail-bench-")
    try:
        if bootstrap is None:
            port = free_port()
            broker_proc = start_broker(port=port, log_file=Path(log_dir) / "tansu.log")
            bootstrap = f"127.0.0.1:{port}"
        ensure_topics(bootstrap)
        settings = load_settings(
            SimulatorSettings,
            kafka_bootstrap=bootstrap,
            drivers=drivers,
            interval=interval,
            seed=seed,
            riders_per_min=0.0,
            log_level="WARNING",
        )
        broker_cpu0 = psutil.Process(broker_proc.pid).cpu_times() if broker_proc else None
        result = asyncio.run(_measure(settings, seconds, warmup))
        gc.collect()  # close the Kafka clients before the broker goes away
        if broker_proc is not None and broker_cpu0 is not None:
            cpu1 = psutil.Process(broker_proc.pid).cpu_times()
            used = (cpu1.user + cpu1.system) - (broker_cpu0.user + broker_cpu0.system)
            result["broker_cpu_cores_whole_run"] = round(used / (seconds + warmup), 3)
    finally:
        if broker_proc is not None:
            stop_process(broker_proc)
    result.update(
        {
            "broker": "embedded tansu (memory storage)" if broker_proc else bootstrap,
            "target": {"pings_per_s": 0.95 * drivers / interval, "cpu_cores": 0.6, "rss_mb": 600},
            "machine": {
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    result["meets_target"] = (
        result["pings_per_s"] >= result["target"]["pings_per_s"]
        and result["cpu_cores"] <= 0.6
        and result["rss_mb"] <= 600
    )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
