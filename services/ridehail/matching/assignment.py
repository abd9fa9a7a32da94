"""Assignment rules, pure and synchronous (the property tests exercise exactly this code).

* :func:`greedy_assign`: riders in arrival order, each takes the available driver with the
  smallest pickup ETA among its candidates (what a dispatcher does immediately on each request).
* :func:`batched_assign`: all waiting riders of a window at once, minimising the total pickup ETA
  with ``scipy.optimize.linear_sum_assignment``. Pairs beyond the radius cost ``INFEASIBLE``, which
  is larger than any sum of real ETAs, so the solver first maximises the number of riders served,
  then minimises their total ETA: it never serves fewer riders than greedy, and with as many
  served its total ETA is never higher.

Only drivers with status ``available`` and no current ride are ever considered; each driver gets
at most one ride per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ridehail.matching.eta import Array, EtaModel, StraightLineEta, distance_matrix_m

INFEASIBLE = 1e9


@dataclass(frozen=True, slots=True)
class RiderRequest:
    ride_id: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class DriverCandidate:
    driver_id: str
    lat: float
    lon: float
    status: str = "available"
    current_ride_id: str | None = None

    @property
    def assignable(self) -> bool:
        return self.status == "available" and self.current_ride_id is None


@dataclass(frozen=True, slots=True)
class Assignment:
    ride_id: str
    driver_id: str
    eta_s: float


def _cost_matrix(
    riders: Sequence[RiderRequest], drivers: Sequence[DriverCandidate], eta: EtaModel, radius_m: float
) -> Array:
    pickups = np.array([(r.lat, r.lon) for r in riders], dtype=np.float64).reshape(-1, 2)
    positions = np.array([(d.lat, d.lon) for d in drivers], dtype=np.float64).reshape(-1, 2)
    distance = distance_matrix_m(pickups, positions)
    if isinstance(eta, StraightLineEta):
        cost = eta.from_distance(distance)
    else:
        cost = np.asarray(eta.matrix(pickups, positions), dtype=np.float64)
    cost[distance > radius_m] = INFEASIBLE
    return cost


def greedy_assign(
    riders: Sequence[RiderRequest], drivers: Sequence[DriverCandidate], eta: EtaModel, radius_m: float
) -> list[Assignment]:
    free = [d for d in drivers if d.assignable]
    if not riders or not free:
        return []
    cost = _cost_matrix(riders, free, eta, radius_m)
    taken = np.zeros(len(free), dtype=bool)
    out: list[Assignment] = []
    for i, rider in enumerate(riders):
        row = np.where(taken, np.inf, cost[i])
        j = int(np.argmin(row))
        if row[j] >= INFEASIBLE:
            continue
        taken[j] = True
        out.append(Assignment(rider.ride_id, free[j].driver_id, float(cost[i, j])))
    return out


def batched_assign(
    riders: Sequence[RiderRequest], drivers: Sequence[DriverCandidate], eta: EtaModel, radius_m: float
) -> list[Assignment]:
    free = [d for d in drivers if d.assignable]
    if not riders or not free:
        return []
    cost = _cost_matrix(riders, free, eta, radius_m)
    return solve(cost, riders, free)


def solve(cost: Array, riders: Sequence[RiderRequest], drivers: Sequence[DriverCandidate]) -> list[Assignment]:
    """Min-total-cost assignment of rows (riders) to columns (drivers), infeasible pairs dropped."""
    from scipy.optimize import linear_sum_assignment  # batched mode only: greedy never loads it (~15 MB)

    rows, cols = linear_sum_assignment(cost)
    return [
        Assignment(riders[i].ride_id, drivers[j].driver_id, float(cost[i, j]))
        for i, j in zip(rows, cols, strict=True)
        if cost[i, j] < INFEASIBLE
    ]


def total_eta(assignments: Sequence[Assignment]) -> float:
    return float(sum(a.eta_s for a in assignments))
