"""Record a seeded simulation, replay it into a fresh stack, compare the database state hashes.

Run A: a fresh embedded broker and database, ``ridehail serve matching`` writing Postgres, and
``ridehail simulate --seed S --duration D`` driving the fleet; everything on the three ridehail
topics is recorded. Run B: another fresh broker and database, another matching, and only
``ridehail replay`` as the source. When matching B has applied the replay, the state hash of B
must equal that of A (see :mod:`ridehail.replay.statehash` for what the hash covers).

Everything runs as real processes on free ports; databases are created on the scratch server
(:func:`ridehail.harness.scratch.scratch_server`) and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ridehail.common.ports import free_port
from ridehail.domain.topics import TOPICS
from ridehail.harness.scratch import private_broker, scratch_database, scratch_server
from ridehail.replay.recorder import Recorder
from ridehail.replay.replay_options import ReplayOptions
from ridehail.replay.replayer import Replayer
from ridehail.replay.statehash import StateHash, state_hash


def _env(bootstrap: str, database_url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(
        {
            "RIDEHAIL_KAFKA_BOOTSTRAP": bootstrap,
            "RIDEHAIL_DATABASE_URL": database_url,
            "RIDEHAIL_MATCHING_PORT": str(free_port()),
            "RIDEHAIL_SIMULATOR_PORT": str(free_port()),
            "RIDEHAIL_STATE_DIR": str(workdir / "state"),
            "RIDEHAIL_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextlib.contextmanager
def running_matching(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ridehail.cli", "serve", "matching"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(proc, int(env["RIDEHAIL_MATCHING_PORT"]), log_path)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"matching exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"matching not ready after {timeout_s}s: {log_path.read_text()[-2000:]}")


def request_rides(bootstrap: str, count: int, over_s: float, seed: int, stop: threading.Event) -> None:
    """Ride requests as the gateway's outbox would publish them: seeded places on the road network."""
    import numpy as np

    from ridehail.common.kafka import EventProducer
    from ridehail.domain.events import LatLon, RideRequested, encode
    from ridehail.domain.roads import RoadGraph
    from ridehail.domain.topics import RIDE_REQUEST

    graph = RoadGraph.load()
    rng = np.random.default_rng(seed)
    producer = EventProducer(bootstrap, "determinism-riders")
    try:
        for i in range(count):
            if stop.wait(over_s / max(count, 1)):
                return
            pickup = graph.node_position(graph.random_node(rng))
            dropoff = graph.node_position(graph.random_node(rng))
            ride_id = f"ride-{seed}-{i:04d}"
            event = RideRequested(
                ride_id=ride_id,
                rider_id=f"rider-{i % 5}",
                pickup=LatLon(pickup[0], pickup[1]),
                dropoff=LatLon(dropoff[0], dropoff[1]),
            )
            producer.produce(RIDE_REQUEST.name, encode(event), ride_id)
    finally:
        producer.close()


def settle(database_url: str, *, expect: StateHash | None = None, timeout_s: float = 90.0) -> StateHash:
    """Poll the state hash until it equals ``expect`` or, without one, stops changing for 2 s."""
    deadline = time.monotonic() + timeout_s
    last: StateHash | None = None
    stable_since = time.monotonic()
    while True:
        current = asyncio.run(state_hash(database_url))
        if expect is not None and current.digest == expect.digest:
            return current
        if last is None or current.digest != last.digest:
            last, stable_since = current, time.monotonic()
        elif expect is None and current.rides + current.drivers > 0 and time.monotonic() - stable_since >= 2.0:
            return current
        if time.monotonic() > deadline:
            return current
        time.sleep(0.5)


def run_determinism_check(
    *,
    seed: int = 7,
    drivers: int = 40,
    duration_s: float = 8.0,
    speed: float | None = None,
    rides: int = 0,
    sim_speedup: float = 1.0,
    workdir: Path | None = None,
    keep_recording: Path | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run A (seeded simulation, recorded) then B (replay only); return both hashes and whether they match."""
    with contextlib.ExitStack() as stack:
        work = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ridehail-determinism-")))
        recording = keep_recording or work / "run-a.rhrec"
        topics = [t.name for t in TOPICS]

        # -- run A: simulator + matching, recorded -------------------------------------------------------
        admin = stack.enter_context(scratch_server())
        with private_broker() as broker_a, scratch_database(admin, "ridehail_replay") as db_a:
            env_a = _env(broker_a, db_a, work)
            with running_matching(env_a, work / "matching-a.log"):
                stop_recording = threading.Event()
                recorder = Recorder(broker_a, recording, topics, from_beginning=True)
                box: dict[str, Any] = {}
                thread = threading.Thread(target=lambda: box.update(result=recorder.run(stop_recording)), daemon=True)
                thread.start()
                echo(f"run A: simulate --seed {seed} --drivers {drivers} --duration {duration_s:g}, {rides} rides")
                riders = threading.Thread(
                    target=request_rides, args=(broker_a, rides, duration_s * 0.5, seed, stop_recording), daemon=True
                )
                riders.start()
                sim = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "ridehail.cli",
                        "simulate",
                        "--seed",
                        str(seed),
                        "--drivers",
                        str(drivers),
                        "--duration",
                        str(duration_s),
                        "--bootstrap",
                        broker_a,
                        "--speedup",
                        str(sim_speedup),
                    ],
                    env=env_a,
                    capture_output=True,
                    timeout=duration_s + 120,
                )
                if sim.returncode != 0:
                    raise RuntimeError(f"simulate failed ({sim.returncode}): {sim.stderr.decode()[-2000:]}")
                hash_a = settle(db_a)
                time.sleep(1.5)  # the recorder writes what it holds at least every second
                stop_recording.set()
                thread.join(30)
            record_result = box.get("result")
            if record_result is None:
                raise RuntimeError("the recorder did not finish")

        # -- run B: replay only ----------------------------------------------------------------------
        with private_broker() as broker_b, scratch_database(admin, "ridehail_replay") as db_b:
            env_b = _env(broker_b, db_b, work)
            with running_matching(env_b, work / "matching-b.log"):
                echo(f"run B: replay {record_result.records:,} records at speed {speed or 'max'}")
                replay = Replayer(recording, broker_b, ReplayOptions(speed=speed)).run()
                hash_b = settle(db_b, expect=hash_a)
        return {
            "match": hash_a.digest == hash_b.digest,
            "seed": seed,
            "drivers": drivers,
            "duration_s": duration_s,
            "replay_speed": speed or "max",
            "rides_requested": rides,
            "simulator_speedup": sim_speedup,
            "recorded": {"records": record_result.records, "per_topic": record_result.per_topic},
            "replayed": replay.sent,
            "run_a": hash_a.as_dict(),
            "run_b": hash_b.as_dict(),
        }
