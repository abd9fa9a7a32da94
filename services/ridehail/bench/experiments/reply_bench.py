"""``ridehail bench reply``: a caller that must wait for the answer, over REST and over Kafka
request/reply, for a login (password grant) and a ride request.

Every (path, operation) arm runs ``repeats`` times in an interleaved order at the same offered
rate, the same number of requests in flight and the same per-request time-out (open loop: a
request's clock starts when it was due). Then, per path, the login responder is stopped under
load and started again: how long until the caller learned of the failure, by error kind, and
what became of the requests sent meanwhile (Kafka: answered after the caller gave up, counted as
late replies).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from ridehail.bench.experiments.environment import machine_info
from ridehail.bench.experiments.infra import CpuMeter
from ridehail.bench.experiments.reply_clients import Caller, KafkaRequester, RestCaller, Window, drive
from ridehail.bench.experiments.reply_env import (
    OPERATIONS,
    PASSWORD,
    ReplyEnvironment,
    password_hash_cost_ms,
    reply_environment,
)
from ridehail.bench.experiments.stats import interleaved_schedule, spread, uncensored_percentiles_ms
from ridehail.domain.geo import SERVICE_AREA

PATHS = ("rest", "kafka")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(text: str) -> None:
    print(f"[bench reply] {text}", file=sys.stderr, flush=True)


def _ride_bodies(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    a = SERVICE_AREA

    def point() -> dict[str, float]:
        return {
            "lat": rng.uniform(a.min_lat + 0.01, a.max_lat - 0.01),
            "lon": rng.uniform(a.min_lon + 0.01, a.max_lon - 0.01),
        }

    return [{"pickup": point(), "dropoff": point()} for _ in range(n)]


def payload_maker(env: ReplyEnvironment, operation: str, count: int, seed: int) -> Callable[[int], dict[str, Any]]:
    """Request bodies made before the clock runs (rider tokens are signed ahead: one new rider per
    ride request, since a rider holds one active ride at a time)."""
    if operation == "login":
        users = env.users
        return lambda k: {"username": users[k % len(users)], "password": PASSWORD}
    bodies = _ride_bodies(64, seed)
    tokens = [env.signer.token(f"reply-rider-{seed}-{k}", "rider") for k in range(count)]
    return lambda k: {"token": tokens[k % len(tokens)], "ride": bodies[k % len(bodies)]}


class CpuLedger:
    """CPU seconds per component (and the bench's own caller process) between two marks."""

    def __init__(self, env: ReplyEnvironment) -> None:
        self.env = env
        self.meters = {name: CpuMeter() for name in [*env.components(), "caller (bench process)"]}

    def mark(self) -> dict[str, float]:
        out = {}
        for name, comp in self.env.components().items():
            out[name] = self.meters[name].sample(comp.pids())
        out["caller (bench process)"] = self.meters["caller (bench process)"].sample([os.getpid()])
        return out


def _used_by(path: str, operation: str, name: str) -> bool:
    if name in ("postgres", "caller (bench process)"):
        return True
    if path == "kafka":
        return name == "broker" or name == f"kafka-responder-{operation}"
    return name.startswith(f"rest-{operation}[")


def _run_record(
    path: str, op: str, repeat: int, rate: float, w: Window, cpu: dict[str, float], late: int
) -> dict[str, Any]:
    pct = uncensored_percentiles_ms(np.frombuffer(w.latencies, dtype="d"), w.unanswered)
    seconds = w.end - w.start
    return {
        "repeat": repeat,
        "path": path,
        "operation": op,
        "offered_per_s": rate,
        "offered": w.sent,
        "answered": w.answered,
        "unanswered": w.unanswered,
        "outcomes": dict(sorted(w.outcomes.items())),
        "p50_ms": pct["p50"],
        "p99_ms": pct["p99"],
        "percentiles": pct,
        "late_replies": late,
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_cores": {k: round(v / seconds, 3) for k, v in cpu.items()},
    }


async def _arms(env: ReplyEnvironment, cfg: dict[str, Any], operations: tuple[str, ...]) -> list[dict[str, Any]]:
    kafka = KafkaRequester(env.broker.bootstrap, env.requester)
    kafka.start()
    rest = RestCaller(env.base_urls(), cfg["concurrency"])
    callers: dict[str, Caller] = {"rest": rest, "kafka": kafka}
    ledger = CpuLedger(env)
    # what every process burns with no requests at all (the broker polls for every consumer)
    before = ledger.mark()
    await asyncio.sleep(2.0)
    after = ledger.mark()
    idle = {k: round((after[k] - before[k]) / 2.0, 3) for k in after}
    arms = [f"{p}:{op}" for op in operations for p in PATHS]
    schedule = interleaved_schedule(arms, cfg["repeats"], seed=cfg["seed"])
    runs: list[dict[str, Any]] = []
    count = int(cfg["rate"] * (cfg["seconds"] + cfg["warmup"])) + 16
    try:
        for i, (repeat, arm) in enumerate(schedule):
            path, op = arm.split(":")
            tag = f"{arm}:{repeat}"
            payload = payload_maker(env, op, count, seed=cfg["seed"] * 1000 + i)
            before = ledger.mark()
            w = await drive(
                callers[path],
                op,
                payload,
                tag=tag,
                rate=cfg["rate"],
                seconds=cfg["seconds"],
                warmup=cfg["warmup"],
                timeout=cfg["timeout"],
                concurrency=cfg["concurrency"],
            )
            after = ledger.mark()
            cpu = {k: after[k] - before[k] for k in after if _used_by(path, op, k)}
            late = kafka.correlator.late_for(tag) if path == "kafka" else 0
            rec = _run_record(path, op, repeat, cfg["rate"], w, cpu, late)
            runs.append(rec)
            _progress(
                f"run {i + 1}/{len(schedule)} repeat {repeat} {path:5} {op:5}: offered {rec['offered']} "
                f"answered {rec['answered']} p50 {rec['p50_ms']} ms p99 {rec['p99_ms']} ms"
            )
        await asyncio.sleep(0.5)  # replies of the last run's timed-out requests, if any
        for rec in runs:
            if rec["path"] == "kafka":
                rec["late_replies"] = kafka.correlator.late_for(f"kafka:{rec['operation']}:{rec['repeat']}")
        outages = {}
        for path in PATHS:
            outages[path] = await _responder_down(env, path, callers[path], kafka, cfg)
    finally:
        await rest.close()
        await asyncio.to_thread(kafka.close)
    return [{"runs": runs, "responder_down": outages, "idle_cores": idle}]


async def _responder_down(
    env: ReplyEnvironment, path: str, caller: Caller, kafka: KafkaRequester, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Login under load; ``pre`` seconds in the responder is stopped (SIGTERM), stays down
    ``outage`` seconds, then is started again, and the load goes on ``after`` seconds past its
    return. *Down* is from the moment its process was gone until it was ready again (its start-up
    counts as down): the requests due then are the ones this reports."""
    op = "login"
    comp = env.responder(path, op)
    pre, outage = 1.5, cfg["outage_seconds"]
    marks: dict[str, float] = {}
    probe: list[float] = []

    async def outage_then_return(t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + pre - time.monotonic()))
        marks["stopping"] = time.monotonic()
        await asyncio.to_thread(comp.stop)
        marks["down"] = time.monotonic()
        if path == "rest":  # the transport's floor: a bare TCP connect to the closed port, same loop
            probe.extend([await _refused_connect_s(comp.port) for _ in range(5)])
        await asyncio.sleep(max(0.0, marks["down"] + outage - time.monotonic()))
        marks["restart"] = time.monotonic()
        await asyncio.to_thread(comp.start)
        marks["ready"] = time.monotonic()

    tag = f"{path}:down"
    _progress(f"responder down: {path} login responder stopped for {outage:g} s plus its restart")
    w = await drive(
        caller,
        op,
        payload_maker(env, op, 0, seed=cfg["seed"]),
        tag=tag,
        rate=cfg["rate"],
        seconds=1e9,
        warmup=0.0,
        timeout=cfg["timeout"],
        concurrency=cfg["concurrency"],
        during=outage_then_return,
        tail_after_during=cfg["after_seconds"],
        keep_events=True,
    )
    await asyncio.sleep(cfg["timeout"] + 1.0)  # replies still coming for the outage's requests
    events = w.events or []
    down = [(d, o, t) for d, o, t in events if marks["down"] <= d < marks["ready"]]
    learned: dict[str, list[float]] = {}
    for d, o, t in down:
        if o != "ok":
            learned.setdefault(o, []).append(t - d)
    late = kafka.correlator.late_between(tag, marks["down"], marks["ready"]) if path == "kafka" else []
    unanswered = sum(1 for _, o, _ in down if o != "ok")
    # no reply at all within the time-out (an error status is a reply: the caller heard back)
    no_reply = sum(1 for _, o, _ in down if o != "ok" and not o.startswith("status_"))
    first_ok = min((t for _, o, t in events if o == "ok" and t >= marks["ready"]), default=None)
    out = {
        "operation": op,
        "outage_s": outage,
        "stop_took_s": round(marks["down"] - marks["stopping"], 3),
        "restart_until_ready_s": round(marks["ready"] - marks["restart"], 3),
        "down_s": round(marks["ready"] - marks["down"], 3),
        "sent_while_down": len(down),
        "answered": len(down) - unanswered,
        "unanswered": unanswered,
        "errors_by_kind": dict(sorted(Counter(o for _, o, _ in down if o != "ok").items())),
        "time_until_caller_learned_s": {
            **{k: _secs(v) for k, v in sorted(learned.items())},
            "any_error": _secs([x for v in learned.values() for x in v]),
        },
        "bare_tcp_connect_refused_s": _secs(probe) if probe else None,
        "first_answer_after_ready_s": round(first_ok - marks["ready"], 3) if first_ok is not None else None,
        "late_replies": len(late),
        "late_reply_age_s": _secs([a - d for d, a in late]),
        "late_reply_after_ready_s": _secs([a - marks["ready"] for _, a in late]),
        "no_reply_within_timeout": no_reply,
        "never_answered": no_reply - len(late),
        # fresh requests after the return (Kafka: queued behind the outage's backlog of stale ones)
        "after_ready": dict(sorted(Counter(o for d, o, _ in events if d >= marks["ready"]).items())),
        "while_stopping": dict(
            sorted(Counter(o for d, o, _ in events if marks["stopping"] <= d < marks["down"]).items())
        ),
        "whole_scenario": {"sent": len(events), "outcomes": dict(sorted(Counter(o for _, o, _ in events).items()))},
    }
    _progress(
        f"responder down: {path}: {out['sent_while_down']} sent while down, errors {out['errors_by_kind']}, "
        f"late replies {out['late_replies']}"
    )
    return out


async def _refused_connect_s(port: int) -> float:
    t0 = time.monotonic()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    except OSError:
        pass
    return time.monotonic() - t0


def _secs(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    data = np.asarray(values)
    return {
        "n": len(values),
        "min": round(float(data.min()), 4),
        "median": round(float(np.median(data)), 4),
        "max": round(float(data.max()), 4),
    }


def summarise(runs: list[dict[str, Any]], operations: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op in operations:
        for path in PATHS:
            mine = [r for r in runs if r["path"] == path and r["operation"] == op]
            out[f"{path}:{op}"] = {
                "p50_ms": spread(r["p50_ms"] for r in mine),
                "p99_ms": spread(r["p99_ms"] for r in mine),
                "answered_share": spread(r["answered"] / r["offered"] if r["offered"] else None for r in mine),
                "responder_cores": spread(_responder_cores(r) for r in mine),
                "broker_cores": spread(r["cpu_cores"].get("broker") for r in mine),
            }
        rest, kafka = out[f"rest:{op}"]["p50_ms"]["median"], out[f"kafka:{op}"]["p50_ms"]["median"]
        out[f"ratio_kafka_over_rest_median_p50:{op}"] = round(kafka / rest, 3) if rest and kafka else None
    return out


def _responder_cores(run: dict[str, Any]) -> float:
    """CPU of the process that answers: the REST service, or the Kafka responder (the broker's CPU
    is reported apart: it also serves the idle polls of every other consumer on it)."""
    cores = [float(v) for k, v in run["cpu_cores"].items() if k not in ("postgres", "broker", "caller (bench process)")]
    return round(sum(cores), 3)


def run_reply_bench(
    *,
    repeats: int = 5,
    rate: float = 5.0,
    seconds: float = 6.0,
    warmup: float = 1.0,
    timeout: float = 2.0,
    concurrency: int = 32,
    outage_seconds: float = 3.0,
    after_seconds: float = 3.0,
    operations: tuple[str, ...] = OPERATIONS,
    seed: int = 1,
) -> dict[str, Any]:
    bad = [op for op in operations if op not in OPERATIONS]
    if bad or not operations:
        raise ValueError(f"--operations must be among {', '.join(OPERATIONS)}, got {', '.join(bad) or 'none'}")
    if rate <= 0 or seconds <= 0 or timeout <= 0 or concurrency < 1 or repeats < 1:
        raise ValueError("--rate, --seconds and --timeout must be > 0; --concurrency and --repeats >= 1")
    started = time.monotonic()
    machine = machine_info()
    cfg = {
        "repeats": repeats,
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "timeout": timeout,
        "concurrency": concurrency,
        "outage_seconds": outage_seconds,
        "after_seconds": after_seconds,
        "operations": list(operations),
        "seed": seed,
    }
    hashing = password_hash_cost_ms()
    stored = hashing.pop("stored_hash")
    _progress("starting postgres, broker, auth, gateway and the Kafka responders")
    # SIGTERM unwinds like Ctrl-C, so the child processes (own sessions) are stopped, not orphaned
    previous = (
        signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        with reply_environment(operations, stored) as env:
            _progress(f"ready after {time.monotonic() - started:.1f} s")
            result = asyncio.run(_arms(env, cfg, operations))[0]
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    load1, load5, _ = os.getloadavg()
    machine["load_avg_at_end"] = [round(load1, 2), round(load5, 2)]
    return {
        "bench": "reply",
        "machine": machine,
        "config": cfg,
        "password_hashing": hashing,
        "idle_cores": result["idle_cores"],
        "runs": result["runs"],
        "summary": summarise(result["runs"], operations),
        "responder_down": result["responder_down"],
        "wall_s": round(time.monotonic() - started, 1),
    }
