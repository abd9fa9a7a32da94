"""Trip distance and time for quotes in well under a millisecond: landmark tables on the road graph.

An exact Dijkstra costs 2-5 ms on this graph, too slow for a quote endpoint that must answer 64
concurrent clients within 50 ms. So the road node nearest the centre of every H3 cell (resolution
8, ~180 cells) becomes a *landmark*, and at start-up one forward and one reverse Dijkstra per
landmark give, for every node ``x``, the fastest time and its road length ``L -> x`` and
``x -> L``. A quote from ``a`` to ``b`` is then the best real road route through one landmark near
either end::

    min over landmarks L of   time(a -> L) + time(L -> b)

taken over ALL landmarks (a vector min over ~180 entries, ~10 us). It is a drivable route, never
faster than the optimum and exact when the optimum passes a landmark. A short trip (landmark route
under 5 minutes) gets an exact Dijkstra limited to that time instead: its search ball is small,
and a detour would matter most there. ``ridehail bench pricing`` measures the error against exact
Dijkstra. Tables: 4 x L x nodes
float32 (~28 MB), built in ~1-3 s in a worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import h3
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from ridehail.domain.roads import RoadGraph

LANDMARK_RESOLUTION = 8
EXACT_BELOW_S = 300.0  # trips shorter than this get an exact (time-limited, so small) Dijkstra


class NoRoute(ValueError):
    """No drivable route between the two points."""


@dataclass(frozen=True, slots=True)
class TripEstimate:
    distance_m: float
    duration_s: float
    pickup_node: int
    dropoff_node: int


def _tree_lengths(pred: np.ndarray, root: int, lengths: sp.csr_matrix, towards_root: bool) -> np.ndarray:
    """Road length along the shortest-path tree given by ``pred`` (one row), for every node."""
    n = len(pred)
    child = np.flatnonzero(pred >= 0)
    parent = pred[child]
    src, dst = (child, parent) if towards_root else (parent, child)  # reverse tree: road runs child -> parent
    w = np.asarray(lengths[src, dst]).ravel()
    tree = sp.csr_matrix((w + 1e-9, (parent, child)), shape=(n, n))
    lengths_from_root: np.ndarray = dijkstra(tree, indices=root)
    return lengths_from_root


class QuoteRouter:
    def __init__(
        self, graph: RoadGraph, resolution: int = LANDMARK_RESOLUTION, exact_below_s: float = EXACT_BELOW_S
    ) -> None:
        self.graph = graph
        self.exact_below_s = exact_below_s
        self.resolution = resolution
        cells = [h3.latlng_to_cell(float(a), float(b), resolution) for a, b in zip(graph.lat, graph.lon, strict=True)]
        by_cell: dict[str, list[int]] = {}
        for node, cell in enumerate(cells):
            by_cell.setdefault(cell, []).append(node)
        landmarks: list[int] = []
        self.landmark_of_cell: dict[str, int] = {}
        for cell, nodes in sorted(by_cell.items()):
            clat, clon = h3.cell_to_latlng(cell)
            idx = np.asarray(nodes)
            d2 = (graph.lat[idx] - clat) ** 2 + ((graph.lon[idx] - clon) * 0.53) ** 2
            self.landmark_of_cell[cell] = len(landmarks)
            landmarks.append(int(idx[int(np.argmin(d2))]))
        self.landmarks = np.asarray(landmarks, dtype=np.int64)
        e = graph.routing_edges
        self._lengths = sp.csr_matrix((graph.length_m[e], (graph.u[e], graph.v[e])), shape=(graph.n, graph.n))
        k, n = len(landmarks), graph.n
        self.fwd_t = np.empty((k, n), dtype=np.float32)  # time landmark -> node
        self.rev_t = np.empty((k, n), dtype=np.float32)  # time node -> landmark
        self.fwd_m = np.empty((k, n), dtype=np.float32)
        self.rev_m = np.empty((k, n), dtype=np.float32)
        for i, root in enumerate(landmarks):
            t, pred = dijkstra(graph._time, indices=root, return_predecessors=True)
            self.fwd_t[i] = t
            self.fwd_m[i] = _tree_lengths(pred, root, self._lengths, towards_root=False)
            t, pred = dijkstra(graph._time_rev, indices=root, return_predecessors=True)
            self.rev_t[i] = t
            self.rev_m[i] = _tree_lengths(pred, root, self._lengths, towards_root=True)

    def estimate_nodes(self, a: int, b: int) -> TripEstimate:
        if a == b:
            return TripEstimate(0.0, 0.0, a, b)
        times = self.rev_t[:, a].astype(np.float64) + self.fwd_t[:, b]
        i = int(np.argmin(times))
        if not np.isfinite(times[i]):
            raise NoRoute(f"no drivable route from node {a} to node {b}")
        best = TripEstimate(float(self.rev_m[i, a] + self.fwd_m[i, b]), float(times[i]), a, b)
        if best.duration_s <= self.exact_below_s:
            return self._exact_within(a, b, best)
        return best

    def _exact_within(self, a: int, b: int, bound: TripEstimate) -> TripEstimate:
        """Short trips: exact Dijkstra, limited to the landmark route's time (a small search)."""
        dist, pred = dijkstra(self.graph._time, indices=a, limit=bound.duration_s + 1e-6, return_predecessors=True)
        if not np.isfinite(dist[b]) or dist[b] >= bound.duration_s:
            return bound
        length, node = 0.0, b
        while node != a:
            prev = int(pred[node])
            length += float(self._lengths[prev, node])
            node = prev
        return TripEstimate(length, float(dist[b]), a, b)

    def estimate(self, pickup: tuple[float, float], dropoff: tuple[float, float]) -> TripEstimate:
        a = self.graph.nearest_node(*pickup)
        b = self.graph.nearest_node(*dropoff)
        return self.estimate_nodes(a, b)


_lock = threading.Lock()
_router: QuoteRouter | None = None


def shared_router() -> QuoteRouter:
    """The process-wide router over the committed Gothenburg graph (built on first use)."""
    global _router
    with _lock:
        if _router is None:
            _router = QuoteRouter(RoadGraph.load())
        return _router
