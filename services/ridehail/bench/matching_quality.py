"""``ridehail bench matching`` phases 3 and 4, in process (no I/O): the batched solver's time on a
1,000 x 2,000 matrix, and greedy vs batched assignment on the same riders and drivers."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from ridehail.bench.matching_support import random_points
from ridehail.common.logging import get_logger
from ridehail.matching.assignment import (
    DriverCandidate,
    RiderRequest,
    batched_assign,
    greedy_assign,
    solve,
    total_eta,
)
from ridehail.matching.eta import StraightLineEta, make_eta_model

log = get_logger(__name__)


# -- phases 3 and 4: solver and greedy vs batched (in process, no I/O) --------------------------------


def bench_solver(riders: int = 1000, drivers: int = 2000, radius_m: float = 3000.0, repeat: int = 5) -> dict[str, Any]:
    from ridehail.matching.assignment import _cost_matrix

    rng = np.random.default_rng(3)
    rs = [RiderRequest(f"r{i}", float(a), float(b)) for i, (a, b) in enumerate(random_points(rng, riders))]
    ds = [DriverCandidate(f"d{i}", float(a), float(b)) for i, (a, b) in enumerate(random_points(rng, drivers))]
    eta = StraightLineEta()
    matrix_runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        cost = _cost_matrix(rs, ds, eta, radius_m)
        matrix_runs.append((time.perf_counter() - t0) * 1000)
    matrix_ms = statistics.median(matrix_runs)
    solve_ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = solve(cost, rs, ds)
        solve_ms.append((time.perf_counter() - t0) * 1000)
    road = make_eta_model("auto")
    t0 = time.perf_counter()
    road.matrix(np.array([(r.lat, r.lon) for r in rs]), np.array([(d.lat, d.lon) for d in ds]))
    road_ms = (time.perf_counter() - t0) * 1000
    return {
        "batch_solve_ms_1000x2000": round(statistics.median(solve_ms), 1),
        "batch_eta_matrix_ms_1000x2000_straight_line": round(matrix_ms, 1),
        f"batch_eta_matrix_ms_1000x2000_{road.name}": round(road_ms, 1),
        "batch_solve_assigned": len(plan),
    }


def bench_greedy_vs_batched(
    windows: int = 20, riders: int = 40, drivers: int = 60, radius_m: float = 3000.0
) -> dict[str, Any]:
    """Same input for both rules: ``windows`` independent rounds of ``riders`` requests arriving
    together among ``drivers`` available drivers (a busy hour: few spare drivers)."""
    eta = make_eta_model("auto")
    rng = np.random.default_rng(4)
    g_total = b_total = 0.0
    g_served = b_served = 0
    for w in range(windows):
        rs = [RiderRequest(f"w{w}r{i}", float(a), float(b)) for i, (a, b) in enumerate(random_points(rng, riders))]
        ds = [DriverCandidate(f"w{w}d{i}", float(a), float(b)) for i, (a, b) in enumerate(random_points(rng, drivers))]
        g = greedy_assign(rs, ds, eta, radius_m)
        b = batched_assign(rs, ds, eta, radius_m)
        g_total += total_eta(g)
        b_total += total_eta(b)
        g_served += len(g)
        b_served += len(b)
    g_mean = g_total / max(g_served, 1)
    b_mean = b_total / max(b_served, 1)
    return {
        "greedy_vs_batched_pickup_eta_ratio": round(g_mean / b_mean, 3) if b_mean else None,
        "greedy_mean_pickup_eta_s": round(g_mean, 1),
        "batched_mean_pickup_eta_s": round(b_mean, 1),
        "greedy_served": g_served,
        "batched_served": b_served,
        "greedy_vs_batched_setup": f"{windows} windows x {riders} riders / {drivers} drivers, {eta.name} ETA",
    }
