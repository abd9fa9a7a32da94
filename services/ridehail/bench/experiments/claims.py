"""``docs/experiments/claims.json``: the eight claims of the REST-vs-events debate, each with a
verdict derived from the committed results (never typed in by hand), and the table that opens
``docs/experiments/README.md``.

Every claim object: ``id`` (1-8), ``claim``, ``verdict`` (``supported`` / ``refuted`` /
``depends``), ``metric``, ``value`` (a number: the median of ``runs`` repeated runs), ``unit``,
``runs``, ``iqr`` ([p25, p75] of those runs), ``condition`` (when the verdict holds) and
``source`` (the results file it comes from).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ridehail.bench.experiments.ingest_study import INGEST_BROKER
from ridehail.bench.experiments.stats import spread

VERDICTS = ("supported", "refuted", "depends")
CLAIM_KEYS = ("id", "claim", "verdict", "metric", "value", "unit", "runs", "iqr", "condition")
CLAIM_TEXT = {
    1: "REST is synchronous, events are asynchronous",
    2: "Events are fire-and-forget",
    3: "Events are more resilient and scale independently",
    4: "Failed messages back up and are processed later",
    5: "With REST a down service answers 503 and you simply retry later",
    6: "The broker is a central point of failure",
    7: 'Per-ping request/response at fleet scale is a "massive performance hit"',
    8: "REST is better where the client must wait for the answer (authentication)",
}
RESULT_FILES = {"ingest": "ingest.json", "outage": "outage.json", "scale": "scale.json", "reply": "reply.json"}
README_BEGIN = "<!-- claims:begin (written by `ridehail bench claims`) -->"
README_END = "<!-- claims:end -->"


class ClaimsError(ValueError):
    """A results file is missing or lacks what a claim needs."""


def _claim(
    cid: int,
    verdict: str,
    metric: str,
    s: dict[str, Any],
    unit: str,
    condition: str,
    source: str,
) -> dict[str, Any]:
    if s["median"] is None or s["iqr"] is None:
        raise ClaimsError(f"claim {cid}: no run produced {metric!r} (source {source})")
    return {
        "id": cid,
        "claim": CLAIM_TEXT[cid],
        "verdict": verdict,
        "metric": metric,
        "value": s["median"],
        "unit": unit,
        "runs": s["runs"] - s["missing"],
        "iqr": s["iqr"],
        "condition": condition,
        "source": source,
    }


def _paired_ratio(runs: list[dict[str, Any]], key: str, arm_key: str, top: Any, base: Any) -> dict[str, Any]:
    """Per repeat, ``top``'s value over ``base``'s (the same repeat ran both, interleaved)."""
    by: dict[tuple[int, Any], float] = {(r["repeat"], r[arm_key]): r[key] for r in runs if r.get(key) is not None}
    ratios = [
        by[(rep, top)] / by[(rep, base)] for rep, arm in by if arm == base and (rep, top) in by and by[(rep, base)]
    ]
    return spread(ratios)


def claim_3(scale: dict[str, Any]) -> dict[str, Any]:
    counts = scale["config"]["instances"]
    lo, hi = min(counts), max(counts)
    s = _paired_ratio(scale["runs"], "ingest_pings_per_s", "instances", hi, lo)
    eta = scale["summary"]["by_instances"]
    eta_lo, eta_hi = eta[str(lo)]["mean_pickup_eta_s"]["median"], eta[str(hi)]["mean_pickup_eta_s"]["median"]
    double = sum(r["double_assigned"] for r in scale["runs"])
    quota = scale["config"]["cpu_quota_cores_per_instance"]
    same_quality = eta_lo is not None and eta_hi is not None and abs(eta_hi - eta_lo) <= 0.05 * eta_lo
    scales = s["median"] is not None and s["median"] >= 0.7 * hi / lo
    verdict = "supported" if scales and same_quality and double == 0 else "depends"
    return _claim(
        3,
        verdict,
        f"backlog throughput of {hi} matching instances / {lo}, same repeat",
        s,
        "x",
        (f"each instance held to {quota} core (cgroup quota)" if quota else "no CPU quota (instances share the cores)")
        + f", {scale['config']['location_partitions']} partitions; "
        f"mean pickup ETA {eta_lo} s at {lo} vs {eta_hi} s at {hi} instance(s); {double} rides assigned twice; "
        "Postgres and the broker outside the quota, on the same machine",
        RESULT_FILES["scale"],
    )


def _ingest_runs(ingest: dict[str, Any], point: str) -> list[dict[str, Any]]:
    return [r for r in ingest["runs"] if r["point"] == point]


def _median(ingest: dict[str, Any], arm: str, point: str, metric: str) -> Any:
    return ingest["summary"].get(arm, {}).get(point, {}).get(metric, {}).get("median")


def claim_1(ingest: dict[str, Any]) -> dict[str, Any]:
    runs = [r for r in _ingest_runs(ingest, "equal") if r["arm"] == "kafka"]
    trail = spread(
        r["ping_to_row_ms"]["p50"] - r["latency_ms"]["p50"]
        if r["ping_to_row_ms"]["p50"] is not None and r["latency_ms"]["p50"] is not None
        else None
        for r in runs
    )
    ack = _median(ingest, "kafka", "equal", "p50_ms")
    rest = _median(ingest, "rest", "equal", "p50_ms")
    rate = runs[0]["offered_per_s"] if runs else None
    # the effect is asynchronous when the row trails the answer; the call is not when it waits too
    verdict = "depends" if ack is not None and ack >= 1.0 else "supported"
    return _claim(
        1,
        verdict,
        "kafka: how far the row trails the broker's ack (ping-to-row p50 - ack p50)",
        trail,
        "ms",
        f"at {rate:g} pings/s offered; the event producer waits for the broker's ack (acks=all, "
        f"p50 {ack} ms) as the REST caller waits for the commit (p50 {rest} ms)"
        + (": asynchronous in effect, not in the call" if verdict == "depends" else ""),
        RESULT_FILES["ingest"],
    )


def claim_7(ingest: dict[str, Any]) -> dict[str, Any]:
    runs = _ingest_runs(ingest, "capacity")
    batch = _paired_ratio(runs, "persisted_per_s", "arm", "rest-batch", "rest")
    per_device = _paired_ratio(runs, "persisted_per_s", "arm", "kafka", "kafka-per-device")
    kafka_rest = _paired_ratio(runs, "persisted_per_s", "arm", "kafka", "rest")
    med = {a: _median(ingest, a, "capacity", "persisted_per_s") for a in ingest["summary"]}
    offered = runs[0]["offered_per_s"] if runs else None
    # the controls on one transport decide; the per-device arm runs on tansu (see the condition)
    massive = batch["median"] is not None and batch["median"] >= 3
    return _claim(
        7,
        "supported" if massive else "depends",
        "capacity of REST with batched requests / REST with one request per ping, same repeat",
        batch,
        "x",
        f"offered {offered:g} pings/s open-loop, broker: {ingest['config'].get('broker', INGEST_BROKER)}; "
        "the hit is one request per ping: "
        f"kafka shared (batching) producer / one producer per device {per_device['median']}x (on tansu, whose "
        "per-device producers mostly timed out at this load), "
        f"kafka / REST per ping {kafka_rest['median']}x; medians in pings/s persisted: "
        + ", ".join(f"{a} {v:,.0f}" for a, v in med.items() if v is not None),
        RESULT_FILES["ingest"],
    )


def _outage(outage: dict[str, Any], broker: str, scenario: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in outage["summary"]
        if e["broker"] == broker and e["scenario"] == scenario and all(e.get(k) == v for k, v in match.items())
    ]


def _one(entries: list[dict[str, Any]], what: str) -> dict[str, Any]:
    if not entries:
        raise ClaimsError(f"outage.json has no summary entry for {what}")
    return max(entries, key=lambda e: e["budget_s"])  # the longest budget: what is lost is not a time-out


def claim_2(outage: dict[str, Any]) -> dict[str, Any]:
    sc = "broker-1-of-3"
    by = {
        a: _one(_outage(outage, "kafka", sc, path="kafka", acks=a), f"kafka acks={a}, {sc}") for a in ("0", "1", "all")
    }
    silent = {a: by[a]["acknowledged_but_lost"] for a in by}
    # with acks=all the producer waits for the replicas and is told of every failure: not "forget"
    verdict = "depends" if silent["all"]["max"] == 0 else "supported"
    return _claim(
        2,
        verdict,
        "kafka acks=all (the default): seconds the producer waited for its acks when one of three brokers died",
        by["all"]["producer_stall_s"],
        "s",
        f"3-node cluster, RF 3, min ISR 2, {outage['config']['rate_per_arm_per_s']:g} pings/s per arm, "
        f"budget {by['all']['budget_s']:g} s: acks=all lost {silent['all']['max']:g} acknowledged pings in any run"
        + (" (every failure was reported to the caller)" if silent["all"]["max"] == 0 else "")
        + f"; acks=1 lost up to {silent['1']['max']:g}, acks=0 up to "
        f"{silent['0']['max']:g} per run without the caller knowing: fire-and-forget is the acks=0/1 setting",
        RESULT_FILES["outage"],
    )


def claim_4(outage: dict[str, Any]) -> dict[str, Any]:
    consumer = _one(_outage(outage, "kafka", "consumer", path="kafka", acks="all"), "kafka, consumer down")
    pg = _outage(outage, "kafka", "postgres", path="kafka", acks="all")
    if not pg:
        raise ClaimsError("outage.json has no kafka acks=all arms in the postgres scenario")
    pg_lost = max(e["lost"]["max"] for e in pg)  # in any run, at any budget
    lost = consumer["lost"]["max"]
    return _claim(
        4,
        "supported" if lost == 0 and pg_lost == 0 else "depends",
        "kafka path: seconds after matching returns until its backlog is worked off",
        consumer["catch_up_s"],
        "s",
        f"matching down {outage['config']['outage_s']:g} s: lost {lost:g} in any run; Postgres down: lost at most "
        f"{pg_lost:g} at any budget (the broker held them); holds while the broker is up and keeps the records",
        RESULT_FILES["outage"],
    )


def claim_5(outage: dict[str, Any]) -> dict[str, Any]:
    rest = sorted(_outage(outage, "kafka", "postgres", path="rest"), key=lambda e: e["budget_s"])
    if not rest:
        raise ClaimsError("outage.json has no rest arms in the postgres scenario")
    short, long_ = rest[0], rest[-1]
    answers_503 = long_["answers"].get("503_retry_after", {}).get("median")
    verdict = (
        "depends"
        if (short["lost_pct"]["median"] or 0) > 0 and (long_["lost_pct"]["median"] or 0) == 0
        else ("supported" if (long_["lost_pct"]["median"] or 0) == 0 else "refuted")
    )
    return _claim(
        5,
        verdict,
        f"REST, Postgres down {outage['config']['outage_s']:g} s: share lost, {short['budget_s']:g} s retry budget",
        short["lost_pct"],
        "%",
        f"with a {long_['budget_s']:g} s budget"
        + (" (longer than the outage)" if long_["budget_s"] > outage["config"]["outage_s"] else "")
        + f" {long_['lost_pct']['median']} % lost; "
        f"the caller got 503 + Retry-After {answers_503:g} times (median) and retried; the budget, not REST, decides",
        RESULT_FILES["outage"],
    )


def claim_6(outage: dict[str, Any]) -> dict[str, Any]:
    cluster = _one(_outage(outage, "kafka", "broker-1-of-3", path="kafka", acks="all"), "kafka acks=all, 1 of 3")
    single = _one(_outage(outage, "tansu", "broker", path="kafka", acks="all"), "tansu broker, kafka acks=all")
    c_lost, s_lost = cluster["acknowledged_but_lost"]["max"], single["acknowledged_but_lost"]["max"]
    # depends: one node is a central point of failure, a replicated cluster is not
    verdict = "depends" if c_lost == 0 and (s_lost or 0) > 0 else ("supported" if c_lost else "refuted")
    return _claim(
        6,
        verdict,
        "kafka acks=all, one node of a 3-node cluster killed: share of pings lost",
        cluster["lost_pct"],
        "%",
        f"RF 3, min ISR 2, budget {cluster['budget_s']:g} s: {c_lost:g} acknowledged and lost in any run; "
        f"producers stalled {cluster['producer_stall_s']['median']} s (median). The single-node "
        f"broker (tansu, memory storage) restarted: up to {s_lost:g} acknowledged pings per run gone with it, "
        f"{single['lost_pct']['median']} % lost: one node is a central point of failure, three survive one "
        "(two down, below min ISR 2, stop writes: not run here)",
        RESULT_FILES["outage"],
    )


def claim_8(reply: dict[str, Any]) -> dict[str, Any]:
    runs = [dict(r, arm=r["path"]) for r in reply["runs"] if r["operation"] == "login"]
    ratio = _paired_ratio(runs, "p50_ms", "arm", "kafka", "rest")
    ride = _paired_ratio(
        [dict(r, arm=r["path"]) for r in reply["runs"] if r["operation"] == "ride"], "p50_ms", "arm", "kafka", "rest"
    )
    down = reply.get("responder_down", {})

    def learned(path: str) -> Any:
        return down.get(path, {}).get("time_until_caller_learned_s", {}).get("any_error", {}).get("median")

    late = down.get("kafka", {}).get("late_replies")
    better = (ratio["median"] or 0) > 1 and (ride["median"] or 0) > 1
    return _claim(
        8,
        "supported" if better else "depends",
        "login p50 over Kafka request/reply / over REST, same repeat",
        ratio,
        "x",
        f"{reply['config'].get('rate')} requests/s, equal concurrency and time-out; ride request {ride['median']}x; "
        f"responder down (one run per path): the REST caller knew in {learned('rest')} s, "
        f"the Kafka caller at its time-out ({learned('kafka')} s) and {late} requests were answered "
        "after their callers had given up",
        RESULT_FILES["reply"],
    )


BUILDERS: dict[int, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    1: ("ingest", claim_1),
    2: ("outage", claim_2),
    3: ("scale", claim_3),
    4: ("outage", claim_4),
    5: ("outage", claim_5),
    6: ("outage", claim_6),
    7: ("ingest", claim_7),
    8: ("reply", claim_8),
}


def build_claims(results_dir: Path) -> list[dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = {}
    for name, file in RESULT_FILES.items():
        path = results_dir / file
        if path.exists():
            loaded[name] = json.loads(path.read_text())
    claims = []
    for cid in sorted(CLAIM_TEXT):
        if cid not in BUILDERS:
            raise ClaimsError(f"claim {cid} has no builder")
        source, build = BUILDERS[cid]
        if source not in loaded:
            raise ClaimsError(f"claim {cid} needs {results_dir / RESULT_FILES[source]}; run scripts/run_experiments.sh")
        try:
            claims.append(build(loaded[source]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            if isinstance(exc, ClaimsError):
                raise
            raise ClaimsError(f"claim {cid}: {RESULT_FILES[source]} lacks what it needs ({exc!r})") from exc
    validate_claims(claims)
    return claims


def validate_claims(claims: list[dict[str, Any]]) -> None:
    """The documented shape, or a ClaimsError saying what is wrong."""
    if [c.get("id") for c in claims] != list(range(1, 9)):
        raise ClaimsError(f"claims must be ids 1..8 in order, got {[c.get('id') for c in claims]}")
    for c in claims:
        missing = [k for k in CLAIM_KEYS if k not in c]
        if missing:
            raise ClaimsError(f"claim {c['id']} lacks {missing}")
        if c["verdict"] not in VERDICTS:
            raise ClaimsError(f"claim {c['id']}: verdict {c['verdict']!r} not in {VERDICTS}")
        if not isinstance(c["value"], int | float) or isinstance(c["value"], bool):
            raise ClaimsError(f"claim {c['id']}: value must be a number")
        if not isinstance(c["runs"], int) or c["runs"] < 1:
            raise ClaimsError(f"claim {c['id']}: runs must be a positive integer")
        iqr = c["iqr"]
        if not (isinstance(iqr, list) and len(iqr) == 2 and all(isinstance(x, int | float) for x in iqr)):
            raise ClaimsError(f"claim {c['id']}: iqr must be [p25, p75]")
        if not iqr[0] <= c["value"] <= iqr[1]:
            raise ClaimsError(f"claim {c['id']}: the median {c['value']} lies outside its IQR {iqr}")


def claims_table(claims: list[dict[str, Any]]) -> str:
    lines = [
        "| # | claim | verdict | the number (median of runs, [IQR]) | holds when |",
        "|---|---|---|---|---|",
    ]
    for c in claims:
        number = f"{c['metric']}: **{c['value']:g} {c['unit']}** ({c['runs']} runs, [{c['iqr'][0]:g}, {c['iqr'][1]:g}])"
        lines.append(f"| {c['id']} | {c['claim']} | **{c['verdict']}** | {number} | {c['condition']} |")
    return "\n".join(lines)


def write_readme_table(readme: Path, claims: list[dict[str, Any]]) -> None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ClaimsError(f"{readme} lacks the markers {README_BEGIN!r} ... {README_END!r}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{claims_table(claims)}\n{README_END}{tail}")
