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
        f"each instance held to {quota} core (cgroup quota), {scale['config']['location_partitions']} partitions; "
        f"mean pickup ETA {eta_lo} s at {lo} vs {eta_hi} s at {hi} instance(s); {double} rides assigned twice; "
        "the machine's 2 cores bound it without a quota",
        RESULT_FILES["scale"],
    )


BUILDERS: dict[int, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    3: ("scale", claim_3),
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
        claims.append(build(loaded[source]))
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
