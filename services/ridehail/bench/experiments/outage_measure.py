"""Pure measurements of one outage run, from the rows Postgres holds and what each client was told.

* :func:`accounting`: per arm, the exact sets: produced ids, acknowledged ids, stored ids;
  ``produced = persisted + lost`` and ``lost = acknowledged_but_lost + lost_caller_told``.
* :func:`freshness`: pings carry unique ids ``prefix + k``; ping ``k`` is a position of logical
  driver ``k % drivers``. At each tick from the outage's start to the end of the load, a driver's
  position age is ``tick - made`` of the newest ping of that driver already stored; freshness is
  recovered at the first tick after the return whose p99 over drivers is below ``threshold_s``.
* :func:`catch_up_s`: how long after the return the last ping made before the return reached Postgres.
* :func:`arm_settled`: whether an arm's rows can be counted yet: every acknowledged ping stored and
  every ping answered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StoredPing:
    k: int  # the ping's index (its unique id is prefix + k)
    made_ms: float  # wall clock when the client made it (the row's last_ts)
    stored_ms: float  # wall clock when its row was written (the row's updated_at)


def accounting(produced: int, acknowledged: set[int], stored: set[int]) -> dict[str, int]:
    """The loss of one arm from exact id sets (``k`` in ``range(produced)``)."""
    stored_ours = {k for k in stored if 0 <= k < produced}
    if len(stored_ours) != len(stored):
        raise ValueError(f"{len(stored) - len(stored_ours)} stored id(s) outside the {produced} produced")
    persisted = len(stored_ours)
    lost = produced - persisted
    ack_lost = len(acknowledged - stored_ours)
    unacked_lost = produced - len(acknowledged | stored_ours)
    out = {
        "produced": produced,
        "acknowledged": len(acknowledged),
        "persisted": persisted,
        "lost": lost,
        "acknowledged_but_lost": ack_lost,
        "lost_caller_told": unacked_lost,  # not acknowledged and not stored: the caller knew it failed
        "persisted_without_ack": len(stored_ours - acknowledged),  # e.g. given up, yet it got there
    }
    if out["produced"] != out["persisted"] + out["lost"] or lost != ack_lost + unacked_lost:
        raise AssertionError(f"loss accounting does not add up: {out}")
    return out


def arm_settled(produced: int, acknowledged: set[int], gone: int, stored: set[int]) -> bool:
    """Every acknowledged ping is in Postgres and every other one was answered as gone (failed,
    given up, ...). From id sets, not counts: a ping given up by its client may still be stored
    (``persisted_without_ack``), so ``stored + gone >= produced`` can hold while an acknowledged
    ping is still on its way."""
    return acknowledged <= stored and len(acknowledged) + gone >= produced


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99, method="higher")) if len(values) else math.inf


def freshness(
    stored: Sequence[StoredPing],
    drivers: int,
    return_ms: float,
    end_ms: float,
    threshold_s: float = 3.0,
    tick_s: float = 0.25,
    start_ms: float | None = None,
) -> dict[str, Any]:
    """Position age over logical drivers at each tick in ``[start_ms, end_ms]`` (``start_ms``: the
    outage's start, default the return); see the module doc. ``stale_s``: ticks with the p99 at or
    above the threshold, in seconds; ``last_stale_s``: the last such tick, from ``start_ms``."""
    if drivers < 1:
        raise ValueError("drivers must be >= 1")
    order = sorted(stored, key=lambda p: p.stored_ms)
    newest = np.full(drivers, -math.inf)
    i = 0
    ticks: list[float] = []
    p99s: list[float | None] = []
    recovered: float | None = None
    at_return: float | None = None
    stale = 0
    last_stale: float | None = None
    origin = return_ms if start_ms is None else min(start_ms, return_ms)
    t = origin
    while t <= end_ms + 1e-6:
        while i < len(order) and order[i].stored_ms <= t:
            d = order[i].k % drivers
            newest[d] = max(newest[d], order[i].made_ms)
            i += 1
        p99 = _p99((t - newest) / 1000.0)
        value = None if math.isinf(p99) else round(p99, 3)
        if value is None or value >= threshold_s:
            stale += 1
            last_stale = round((t - origin) / 1000.0, 3)
        ticks.append(round((t - origin) / 1000.0, 3))
        p99s.append(value)
        if t >= return_ms:
            if at_return is None:
                at_return = value if value is not None else math.inf
            if recovered is None and value is not None and value < threshold_s:
                recovered = round((t - return_ms) / 1000.0, 3)
        t += tick_s * 1000.0
    return {
        "threshold_s": threshold_s,
        "tick_s": tick_s,
        "logical_drivers": drivers,
        "recovered_after_s": recovered,  # None: not within the window below
        "window_s": round((end_ms - return_ms) / 1000.0, 2),
        "p99_age_at_return_s": None if at_return is None or math.isinf(at_return) else at_return,
        "stale_s": round(stale * tick_s, 2),
        "last_stale_s": last_stale,
        # one tick per second for the record, t from the window's start
        "p99_age_s": {"t": ticks[:: max(1, round(1 / tick_s))], "p99": p99s[:: max(1, round(1 / tick_s))]},
    }


def catch_up_s(stored: Iterable[StoredPing], return_ms: float) -> float | None:
    """Seconds after the return until the last stored ping made before the return was stored."""
    late = [p.stored_ms for p in stored if p.made_ms < return_ms]
    if not late:
        return None
    return round(max(0.0, (max(late) - return_ms) / 1000.0), 2)
