"""Surge pricing as a pure stream computation (no I/O): events in, multiplier changes out.

State per H3 cell over a sliding event-time window of ``window_s`` seconds (an event stamped
later than it arrived counts from its arrival: a clock ahead of ours cannot keep it in the window):

- **demand**: distinct ride requests (by ``ride_id``) whose pickup lies in the cell;
- **supply**: distinct drivers whose NEWEST ping (highest ``seq``) in the window says
  ``available`` and lies in the cell.

Both are sets, so the result of :meth:`SurgeBook.recompute` does not depend on the order in which
events of a window arrived. The target multiplier is a pure, monotone, clamped function of
``(demand, supply)`` (:func:`target_multiplier`); the published multiplier follows it through an
exponential smoothing step and is quantised to ``step`` with hysteresis, so it does not flicker
between two values when the ratio hovers at a boundary. A change is reported only when a cell's
published multiplier changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h3

DEFAULT_RESOLUTION = 8  # ~0.74 km² per cell, ~0.46 km edge: about 150 cells cover the city


@dataclass(frozen=True, slots=True)
class SurgePolicy:
    """How demand and supply become a multiplier."""

    window_s: float = 300.0
    cap: float = 3.0
    threshold: float = 1.0  # demand/supply ratio at which surge starts
    sensitivity: float = 0.5  # multiplier added per unit of ratio above the threshold
    step: float = 0.1  # published multipliers are multiples of this
    smoothing: float = 0.5  # weight of the new target in each recompute (1.0 = no smoothing)
    hysteresis: float = 0.6  # in steps: how far the smoothed value must move before publishing

    def __post_init__(self) -> None:
        if not self.cap >= 1.0:
            raise ValueError("cap must be >= 1")
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError("smoothing must be in (0, 1]")
        if not self.step > 0 or not self.window_s > 0:
            raise ValueError("step and window_s must be > 0")
        if not 0.5 <= self.hysteresis <= 1.0:
            raise ValueError("hysteresis must be in [0.5, 1] steps")


def target_multiplier(demand: int, supply: int, policy: SurgePolicy) -> float:
    """1.0 while demand/(supply+1) stays under the threshold, then linear, clamped to ``cap``.

    Non-decreasing in ``demand``, non-increasing in ``supply``, always within ``[1, cap]``.
    """
    if demand <= 0:
        return 1.0
    ratio = demand / (max(supply, 0) + 1)
    raw = 1.0 + policy.sensitivity * max(0.0, ratio - policy.threshold)
    return min(policy.cap, max(1.0, raw))


def quantise(value: float, step: float, cap: float) -> float:
    """Round to the nearest multiple of ``step`` within ``[1, cap]`` (2 decimals, no float noise)."""
    q = round(round(value / step) * step, 2)
    return min(round(cap, 2), max(1.0, q))


@dataclass(frozen=True, slots=True)
class SurgeChange:
    cell: str
    multiplier: float
    previous: float
    demand: int
    supply: int


@dataclass(slots=True)
class _Cell:
    smoothed: float = 1.0
    published: float = 1.0


@dataclass(slots=True)
class _Driver:
    seq: int
    ts: int
    cell: str
    available: bool


@dataclass
class SurgeBook:
    """The sliding-window state of the whole city; feed events, call :meth:`recompute` on a tick."""

    policy: SurgePolicy = field(default_factory=SurgePolicy)
    resolution: int = DEFAULT_RESOLUTION
    drivers: dict[str, _Driver] = field(default_factory=dict)
    requests: dict[str, tuple[str, int]] = field(default_factory=dict)  # ride_id -> (cell, ts)
    cells: dict[str, _Cell] = field(default_factory=dict)
    last_counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def cell_of(self, lat: float, lon: float) -> str:
        return str(h3.latlng_to_cell(lat, lon, self.resolution))

    def add_location(
        self,
        driver_id: str,
        seq: int,
        ts: int,
        lat: float,
        lon: float,
        available: bool,
        received_ms: int | None = None,
    ) -> None:
        """A ping at event time ``ts``; with ``received_ms`` (its arrival) a ts ahead of it counts as
        the arrival, so a skewed or hostile clock cannot hold an event in the window forever."""
        known = self.drivers.get(driver_id)
        if known is not None and known.seq >= seq:
            return  # older or duplicate ping: the newest one decides
        if received_ms is not None and ts > received_ms:
            ts = received_ms
        self.drivers[driver_id] = _Driver(seq, ts, h3.latlng_to_cell(lat, lon, self.resolution), available)

    def add_request(self, ride_id: str, ts: int, lat: float, lon: float, received_ms: int | None = None) -> None:
        if ride_id not in self.requests:
            if received_ms is not None and ts > received_ms:
                ts = received_ms
            self.requests[ride_id] = (h3.latlng_to_cell(lat, lon, self.resolution), ts)

    def counts(self, now_ms: int) -> dict[str, tuple[int, int]]:
        """``cell -> (demand, supply)`` for the window ending at ``now_ms``; forgets older events."""
        start = now_ms - int(self.policy.window_s * 1000)
        demand: dict[str, int] = {}
        supply: dict[str, int] = {}
        stale_rides = [r for r, (_, ts) in self.requests.items() if ts < start]
        for r in stale_rides:
            del self.requests[r]
        for cell, ts in self.requests.values():
            if ts <= now_ms:
                demand[cell] = demand.get(cell, 0) + 1
        stale_drivers = [d for d, v in self.drivers.items() if v.ts < start]
        for d in stale_drivers:
            del self.drivers[d]
        for v in self.drivers.values():
            if v.available and v.ts <= now_ms:
                supply[v.cell] = supply.get(v.cell, 0) + 1
        out = {c: (n, supply.get(c, 0)) for c, n in demand.items()}
        for c, s in supply.items():
            out.setdefault(c, (0, s))
        return out

    def recompute(self, now_ms: int) -> list[SurgeChange]:
        """One smoothing step for every cell; returns the cells whose published multiplier changed."""
        policy = self.policy
        counts = self.counts(now_ms)
        self.last_counts = counts
        changes: list[SurgeChange] = []
        band = policy.hysteresis * policy.step
        for cell in set(counts) | set(self.cells):
            demand, supply = counts.get(cell, (0, 0))
            target = target_multiplier(demand, supply, policy)
            state = self.cells.get(cell)
            if state is None:
                if target == 1.0:
                    continue  # a quiet cell needs no state
                state = self.cells[cell] = _Cell()
            state.smoothed += policy.smoothing * (target - state.smoothed)
            if abs(state.smoothed - target) < 1e-9:
                state.smoothed = target
            if abs(state.smoothed - state.published) >= band or (
                state.smoothed == target and quantise(target, policy.step, policy.cap) != state.published
            ):
                new = quantise(state.smoothed, policy.step, policy.cap)
                if new != state.published:
                    changes.append(SurgeChange(cell, new, state.published, demand, supply))
                    state.published = new
            if state.published == 1.0 and target == 1.0 and state.smoothed - 1.0 < 0.01:
                del self.cells[cell]
        return changes

    def restore(self, published: dict[str, float]) -> None:
        """Start from multipliers published earlier (after a restart): they decay or hold as usual."""
        for cell, value in published.items():
            value = quantise(value, self.policy.step, self.policy.cap)
            if value != 1.0:
                self.cells[cell] = _Cell(smoothed=value, published=value)

    def multiplier(self, cell: str) -> float:
        state = self.cells.get(cell)
        return state.published if state is not None else 1.0

    def snapshot(self) -> dict[str, float]:
        return {c: s.published for c, s in self.cells.items() if s.published != 1.0}


def cell_boundary(cell: str) -> list[list[float]]:
    """The cell's polygon as ``[[lat, lon], ...]`` (Leaflet order), coordinates rounded to ~1 m."""
    return [[round(lat, 5), round(lon, 5)] for lat, lon in h3.cell_to_boundary(cell)]


def cell_at(lat: float, lon: float, resolution: int = DEFAULT_RESOLUTION) -> str:
    """The H3 cell (hex string) holding a point."""
    return str(h3.latlng_to_cell(lat, lon, resolution))
