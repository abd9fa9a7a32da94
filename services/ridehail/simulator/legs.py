"""A driver's current drive: a polyline with per-segment speeds, walked by time.

A :class:`Leg` is built once per trip (cruise, to the pickup, to the drop-off) from a road route;
each ping then only advances a time cursor and interpolates between two points, so no path search
ever happens per ping. Arrays are ``array('d')`` (compact, and indexing yields plain floats, which
is faster than numpy scalars in the per-ping loop).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

from ridehail.domain.roads import RoadGraph, Route, haversine_m

M_PER_DEG_LAT = 111_195.0


def _arr(values: np.ndarray) -> array[float]:
    out = array("d")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return out


def _iarr(values: np.ndarray) -> array[int]:
    out = array("q")
    out.frombytes(np.ascontiguousarray(values, dtype=np.int64).tobytes())
    return out


@dataclass(slots=True)
class Leg:
    """Points ``lat``/``lon``; segment i joins point i and i+1 and is driven at ``seg_speed[i]``
    (m/s, at most ``seg_limit[i]``, the edge's free-flow speed). ``cum_t``/``cum_d`` are the time
    and distance at each point from the start. ``node_pt[k]`` is the point index of route node
    ``nodes[k]``."""

    lat: array[float]
    lon: array[float]
    cum_t: array[float]
    cum_d: array[float]
    seg_speed: array[float]
    seg_limit: array[float]
    node_pt: array[int]
    nodes: array[int]

    @property
    def total_t(self) -> float:
        return self.cum_t[-1]

    @property
    def total_d(self) -> float:
        return self.cum_d[-1]

    @property
    def end_node(self) -> int:
        return self.nodes[-1]


@dataclass(slots=True)
class Cursor:
    """Where a driver is on its leg: time ``t`` since the leg started, segment index ``seg``."""

    t: float = 0.0
    seg: int = 0


def build_leg(
    graph: RoadGraph,
    route: Route,
    speed_factors: np.ndarray,
    prefix: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Leg:
    """Leg for ``route`` with one speed factor (0..1] per route edge; ``prefix`` is an optional
    (lat, lon, seg_speed, seg_limit) run of points that ends at the route's first node (the rest of
    the edge a driver is on when it is re-routed)."""
    lat, lon = route.lat, route.lon
    node_pt = np.zeros(len(route.nodes), dtype=np.int64)
    if len(route.edges):
        rank = _edge_rank(route)  # route position of each polyline segment's edge
        limit = graph.speed_mps[route.point_edge]
        speed = limit * np.asarray(speed_factors, dtype=np.float64)[rank]
        node_pt[1:] = np.cumsum(np.bincount(rank, minlength=len(route.edges)))
    else:
        limit = speed = np.zeros(0)
    if prefix is not None and len(prefix[0]) > 1:
        p_lat, p_lon, p_speed, p_limit = prefix
        shift = len(p_lat) - 1
        lat = np.concatenate((p_lat[:-1], lat))
        lon = np.concatenate((p_lon[:-1], lon))
        speed = np.concatenate((p_speed, speed))
        limit = np.concatenate((p_limit, limit))
        node_pt = np.concatenate(([0], node_pt + shift))
        nodes = np.concatenate(([-1], route.nodes))
    else:
        nodes = route.nodes
    seg_d = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]) if len(lat) > 1 else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        seg_t = np.where(seg_d > 0, seg_d / np.maximum(speed, 0.1), 0.0)
    return Leg(
        lat=_arr(lat),
        lon=_arr(lon),
        cum_t=_arr(np.concatenate(([0.0], np.cumsum(seg_t)))),
        cum_d=_arr(np.concatenate(([0.0], np.cumsum(seg_d)))),
        seg_speed=_arr(speed),
        seg_limit=_arr(limit),
        node_pt=_iarr(node_pt),
        nodes=_iarr(nodes),
    )


def _edge_rank(route: Route) -> np.ndarray:
    """For each polyline segment, the position (0..len(edges)-1) of its edge within the route."""
    n_edges = len(route.edges)
    # point_edge is the edge id of each segment, in route order; consecutive runs = one route edge.
    change = np.ones(len(route.point_edge), dtype=bool)
    change[1:] = route.point_edge[1:] != route.point_edge[:-1]
    rank = np.cumsum(change) - 1
    if n_edges and rank[-1] != n_edges - 1:
        # the same edge twice in a row cannot happen on a shortest path; keep it robust anyway
        raise ValueError("route edges and polyline do not line up")
    return rank


def position(leg: Leg, cur: Cursor) -> tuple[float, float, float, float]:
    """(lat, lon, heading_deg, speed_mps) at the cursor; speed 0 at the end of the leg."""
    cum_t = leg.cum_t
    i = cur.seg
    last = len(cum_t) - 1
    if i >= last:
        return leg.lat[last], leg.lon[last], _heading(leg, last - 1) if last else 0.0, 0.0
    t0, t1 = cum_t[i], cum_t[i + 1]
    f = (cur.t - t0) / (t1 - t0) if t1 > t0 else 1.0
    lat0, lon0 = leg.lat[i], leg.lon[i]
    return (
        lat0 + (leg.lat[i + 1] - lat0) * f,
        lon0 + (leg.lon[i + 1] - lon0) * f,
        _heading(leg, i),
        leg.seg_speed[i],
    )


def advance(leg: Leg, cur: Cursor, dt: float) -> bool:
    """Move the cursor ``dt`` seconds along the leg; True when the leg's end is reached."""
    cum_t = leg.cum_t
    last = len(cum_t) - 1
    t = cur.t + dt
    if t >= cum_t[last]:
        cur.t = cum_t[last]
        cur.seg = last
        return True
    i = cur.seg
    while cum_t[i + 1] <= t:
        i += 1
    cur.t = t
    cur.seg = i
    return False


def distance_at(leg: Leg, cur: Cursor) -> float:
    """Distance driven on this leg up to the cursor, metres."""
    i = cur.seg
    last = len(leg.cum_t) - 1
    if i >= last:
        return leg.cum_d[last]
    t0, t1 = leg.cum_t[i], leg.cum_t[i + 1]
    f = (cur.t - t0) / (t1 - t0) if t1 > t0 else 1.0
    return leg.cum_d[i] + (leg.cum_d[i + 1] - leg.cum_d[i]) * f


def remainder_to_next_node(leg: Leg, cur: Cursor) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The next route node ahead of the cursor and the polyline from the current position to it
    (lat, lon, seg_speed, seg_limit), so a re-routed driver finishes its edge instead of jumping."""
    lat, lon, _, _ = position(leg, cur)
    last = len(leg.cum_t) - 1
    if cur.seg >= last:
        return leg.nodes[-1], (np.array([lat]), np.array([lon]), np.zeros(0), np.zeros(0))
    node_pt = leg.node_pt
    k = 0
    while k < len(node_pt) and (node_pt[k] <= cur.seg or leg.nodes[k] < 0):
        k += 1
    end = node_pt[k]
    pts_lat = np.array([lat, *leg.lat[cur.seg + 1 : end + 1]])
    pts_lon = np.array([lon, *leg.lon[cur.seg + 1 : end + 1]])
    speed = np.array(leg.seg_speed[cur.seg : end])
    limit = np.array(leg.seg_limit[cur.seg : end])
    return leg.nodes[k], (pts_lat, pts_lon, speed, limit)


def stationary_leg(graph: RoadGraph, node: int) -> Leg:
    """A zero-length leg parked at ``node``."""
    lat, lon = graph.node_position(node)
    z = np.zeros(0)
    return Leg(
        lat=_arr(np.array([lat])),
        lon=_arr(np.array([lon])),
        cum_t=_arr(np.zeros(1)),
        cum_d=_arr(np.zeros(1)),
        seg_speed=_arr(z),
        seg_limit=_arr(z),
        node_pt=_iarr(np.zeros(1, dtype=np.int64)),
        nodes=_iarr(np.array([node], dtype=np.int64)),
    )


def _heading(leg: Leg, i: int) -> float:
    if i < 0:
        return 0.0
    lat0 = leg.lat[i]
    dy = leg.lat[i + 1] - lat0
    dx = (leg.lon[i + 1] - leg.lon[i]) * math.cos(math.radians(lat0))
    if dx == 0.0 and dy == 0.0:
        return 0.0
    h = math.degrees(math.atan2(dx, dy)) % 360.0
    return 0.0 if h >= 360.0 else h
