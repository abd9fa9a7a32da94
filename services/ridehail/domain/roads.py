"""The Gothenburg road network (``data/gothenburg.graph.npz``): routing, snapping, ETAs.

Built by ``scripts/build_road_graph.py`` from OpenStreetMap data (© OpenStreetMap contributors,
ODbL 1.0; see ``data/README.md``). Needs only numpy and scipy at run time.

The graph is directed and strongly connected (every node reaches every other node). Nodes are
intersections; each directed edge carries its full road polyline, its length, its free-flow travel
time and its road class. Edge weights for routing and ETAs are travel times in seconds.

Typical use::

    graph = RoadGraph.load()                      # cached per process (~40 ms the first time)
    a = graph.nearest_node(57.7089, 11.9746)      # snap a point to the closest intersection
    route = graph.route(a, graph.random_node(rng))
    route.lat, route.lon, route.length_m, route.time_s

    # Matching: ETA in seconds from every candidate driver's node to one pickup node, with a single
    # Dijkstra on the reversed graph (~1 ms for the whole city, whatever the number of drivers).
    etas = graph.etas_to(pickup_node, driver_nodes)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree


def default_graph_path() -> Path:
    from ridehail.paths import data_dir

    return data_dir() / "gothenburg.graph.npz"


EARTH_RADIUS_M = 6_371_008.8
_NO_PRED = -9999  # scipy's "no predecessor" marker


class RoutingError(ValueError):
    """A node id outside the graph, or two nodes with no path between them."""


@dataclass(frozen=True, slots=True)
class Route:
    """A path along the road network, from ``nodes[0]`` to ``nodes[-1]``.

    ``lat``/``lon`` is the road polyline (consecutive duplicate points removed at edge joins);
    ``point_edge[i]`` is the edge that polyline segment ``i`` (point i -> i+1) belongs to.
    """

    nodes: np.ndarray
    edges: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    point_edge: np.ndarray
    length_m: float
    time_s: float


class RoadGraph:
    """A directed road graph with per-edge polylines; load it with :meth:`RoadGraph.load`."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.lat = arrays["node_lat_e6"].astype(np.float64) / 1e6
        self.lon = arrays["node_lon_e6"].astype(np.float64) / 1e6
        self.n = len(self.lat)
        self.u = arrays["u"].astype(np.int64)
        self.v = arrays["v"].astype(np.int64)
        self.length_m = arrays["length_m"].astype(np.float64)
        self.time_s = arrays["time_s"].astype(np.float64)
        self.speed_mps = arrays["speed_kmh"].astype(np.float64) / 3.6
        self.cls = arrays["cls"].astype(np.int64)
        self.class_names: tuple[str, ...] = tuple(str(c) for c in arrays["class_names"])
        self.geom_ptr = arrays["geom_ptr"].astype(np.int64)
        self.geom_lat = arrays["geom_lat_e6"].astype(np.float64) / 1e6
        self.geom_lon = arrays["geom_lon_e6"].astype(np.float64) / 1e6
        if self.n == 0 or len(self.u) == 0:
            raise ValueError("empty road graph")
        if int(max(self.u.max(), self.v.max())) >= self.n:
            raise ValueError("edge refers to a missing node")

        # scipy's CSR constructor SUMS duplicate (u, v) entries: keep only the fastest of parallels.
        order = np.lexsort((self.time_s, self.v, self.u))
        first = np.ones(len(order), dtype=bool)
        first[1:] = (self.u[order][1:] != self.u[order][:-1]) | (self.v[order][1:] != self.v[order][:-1])
        self.routing_edges = order[first]
        ue, ve = self.u[self.routing_edges], self.v[self.routing_edges]
        self._time = sp.csr_matrix((self.time_s[self.routing_edges], (ue, ve)), shape=(self.n, self.n))
        self._time_rev = self._time.T.tocsr()
        self._edge_of: dict[tuple[int, int], int] = {
            (int(a), int(b)): int(e) for a, b, e in zip(ue, ve, self.routing_edges, strict=True)
        }
        # Equirectangular projection around the network's centre, in metres, for the k-d tree.
        self._lat0 = float(self.lat.mean())
        self._kx = math.cos(math.radians(self._lat0)) * math.radians(1) * EARTH_RADIUS_M
        self._ky = math.radians(1) * EARTH_RADIUS_M
        self._tree = cKDTree(np.column_stack((self.lon * self._kx, self.lat * self._ky)))

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> RoadGraph:
        """Load a graph npz (default: the committed Gothenburg graph); cached per process and path."""
        return _load_cached(str(Path(path or default_graph_path()).resolve()))

    @classmethod
    def from_file(cls, path: str | Path) -> RoadGraph:
        """Load without the cache (tests that need a private instance)."""
        with np.load(path, allow_pickle=False) as z:
            return cls({k: z[k] for k in z.files})

    # -- nodes -----------------------------------------------------------------------------------
    def _check(self, node: int) -> int:
        node = int(node)
        if not 0 <= node < self.n:
            raise RoutingError(f"node {node} is not in the graph (0..{self.n - 1})")
        return node

    def node_position(self, node: int) -> tuple[float, float]:
        node = self._check(node)
        return float(self.lat[node]), float(self.lon[node])

    def random_node(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.n))

    def nearest_node(self, lat: float, lon: float) -> int:
        return self.nearest_node_with_distance(lat, lon)[0]

    def nearest_node_with_distance(self, lat: float, lon: float) -> tuple[int, float]:
        """The closest intersection and its straight-line distance in metres."""
        if not (math.isfinite(lat) and math.isfinite(lon)):
            raise RoutingError(f"not a position: {lat}, {lon}")
        dist, idx = self._tree.query((lon * self._kx, lat * self._ky))
        return int(idx), float(dist)

    def nearest_nodes(self, lat: Sequence[float] | np.ndarray, lon: Sequence[float] | np.ndarray) -> np.ndarray:
        """Vectorised :meth:`nearest_node` for many points."""
        pts = np.column_stack((np.asarray(lon, dtype=np.float64) * self._kx, np.asarray(lat) * self._ky))
        nodes: np.ndarray = self._tree.query(pts)[1].astype(np.int64)
        return nodes

    # -- edges -----------------------------------------------------------------------------------
    def edge_between(self, a: int, b: int) -> int:
        """The (fastest) directed edge a -> b; KeyError if there is none."""
        return self._edge_of[(int(a), int(b))]

    def edge_polyline(self, edge: int) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) points of one directed edge, from its start node to its end node."""
        s, e = int(self.geom_ptr[edge]), int(self.geom_ptr[edge + 1])
        return self.geom_lat[s:e], self.geom_lon[s:e]

    def edge_class(self, edge: int) -> str:
        return self.class_names[int(self.cls[edge])]

    # -- shortest paths --------------------------------------------------------------------------
    def route(self, a: int, b: int) -> Route:
        """Fastest path a -> b with its road polyline; raises RoutingError if there is none."""
        a, b = self._check(a), self._check(b)
        if a == b:
            return self._route_from_nodes(np.array([a], dtype=np.int64))
        dist, pred = dijkstra(self._time, indices=a, return_predecessors=True)
        if not np.isfinite(dist[b]):
            raise RoutingError(f"no path from node {a} to node {b}")
        return self._route_from_nodes(self._backtrack(pred, a, b))

    def routes_within(self, sources: Sequence[int], max_time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """One bounded Dijkstra per source, in a single call: (times, predecessors), each of shape
        (len(sources), n); nodes beyond ``max_time_s`` are ``inf``. Use :meth:`path_to` to extract."""
        idx = np.asarray([self._check(s) for s in sources], dtype=np.int64)
        dist, pred = dijkstra(self._time, indices=idx, return_predecessors=True, limit=max_time_s)
        return dist, pred

    def path_to(self, pred_row: np.ndarray, source: int, target: int) -> Route:
        """Route for ``target`` from a predecessor row returned by :meth:`routes_within`."""
        if source == target:
            return self._route_from_nodes(np.array([source], dtype=np.int64))
        if pred_row[target] == _NO_PRED:
            raise RoutingError(f"no path from node {source} to node {target}")
        return self._route_from_nodes(self._backtrack(pred_row, source, target))

    def etas_from(self, node: int, targets: Sequence[int] | np.ndarray, limit_s: float = np.inf) -> np.ndarray:
        """Travel time in seconds from ``node`` to each of ``targets`` (one Dijkstra; ``inf`` when
        unreachable or beyond ``limit_s``)."""
        dist: np.ndarray = dijkstra(self._time, indices=self._check(node), limit=limit_s)
        return dist[np.asarray(targets, dtype=np.int64)]

    def etas_to(self, node: int, sources: Sequence[int] | np.ndarray, limit_s: float = np.inf) -> np.ndarray:
        """Travel time in seconds from each of ``sources`` to ``node`` (one Dijkstra on the reversed
        graph): the driver -> pickup ETAs matching needs, for any number of drivers at once."""
        dist: np.ndarray = dijkstra(self._time_rev, indices=self._check(node), limit=limit_s)
        return dist[np.asarray(sources, dtype=np.int64)]

    def path_cost(self, nodes: Sequence[int]) -> tuple[float, float]:
        """(length_m, time_s) of a node path using the routing edges; KeyError if not a path."""
        edges = [self._edge_of[(int(a), int(b))] for a, b in zip(nodes, nodes[1:], strict=False)]
        return float(self.length_m[edges].sum()), float(self.time_s[edges].sum())

    # -- internals -------------------------------------------------------------------------------
    @staticmethod
    def _backtrack(pred: np.ndarray, a: int, b: int) -> np.ndarray:
        path = [b]
        node = b
        while node != a:
            node = int(pred[node])
            if node < 0:
                raise RoutingError(f"no path from node {a} to node {b}")
            path.append(node)
        path.reverse()
        return np.asarray(path, dtype=np.int64)

    def _route_from_nodes(self, nodes: np.ndarray) -> Route:
        if len(nodes) == 1:
            n = int(nodes[0])
            return Route(
                nodes=nodes,
                edges=np.zeros(0, dtype=np.int64),
                lat=self.lat[[n]],
                lon=self.lon[[n]],
                point_edge=np.zeros(0, dtype=np.int64),
                length_m=0.0,
                time_s=0.0,
            )
        edges = np.fromiter(
            (self._edge_of[(int(a), int(b))] for a, b in zip(nodes[:-1], nodes[1:], strict=True)),
            dtype=np.int64,
            count=len(nodes) - 1,
        )
        starts, ends = self.geom_ptr[edges], self.geom_ptr[edges + 1]
        counts = ends - starts - 1  # drop each edge's last point (it is the next edge's first)
        offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        take = np.arange(int(counts.sum())) + offsets
        take = np.append(take, ends[-1] - 1)
        return Route(
            nodes=nodes,
            edges=edges,
            lat=self.geom_lat[take],
            lon=self.geom_lon[take],
            point_edge=np.repeat(edges, counts),
            length_m=float(self.length_m[edges].sum()),
            time_s=float(self.time_s[edges].sum()),
        )


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> RoadGraph:
    return RoadGraph.from_file(path)


def haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Vectorised great-circle distance in metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    metres: np.ndarray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))
    return metres
