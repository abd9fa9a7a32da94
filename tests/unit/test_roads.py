"""Road data and routing: the committed graph's invariants, routing against a reference
Dijkstra, the build script's rules on a hand-made OSM export."""

from __future__ import annotations

import hashlib
import heapq
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ridehail.domain.geo import SERVICE_AREA
from ridehail.domain.roads import RoadGraph, RoutingError, default_graph_path, haversine_m

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"


def _build_script() -> ModuleType:
    path = REPO / "scripts" / "build_road_graph.py"
    spec = importlib.util.spec_from_file_location("build_road_graph", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_road_graph"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return RoadGraph.load()


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    with np.load(default_graph_path()) as z:
        return {k: z[k] for k in z.files}


def reference_times(raw: dict[str, np.ndarray], source: int) -> dict[int, float]:
    """Plain heapq Dijkstra over every edge of the file (parallel edges included), in seconds."""
    adj: dict[int, list[tuple[int, float]]] = {}
    for a, b, t in zip(raw["u"].tolist(), raw["v"].tolist(), raw["time_s"].astype(np.float64).tolist(), strict=True):
        adj.setdefault(a, []).append((b, t))
    best = {source: 0.0}
    heap = [(0.0, source)]
    while heap:
        d, x = heapq.heappop(heap)
        if d > best.get(x, math.inf):
            continue
        for y, t in adj.get(x, ()):
            nd = d + t
            if nd < best.get(y, math.inf):
                best[y] = nd
                heapq.heappush(heap, (nd, y))
    return best


# -- committed files ----------------------------------------------------------------------------


def test_committed_files_are_small_and_attributed() -> None:
    assert (DATA / "gothenburg.graph.npz").stat().st_size < 1_000_000
    assert (DATA / "gothenburg.roads.geojson").stat().st_size < 1_500_000
    licence = (DATA / "LICENSE").read_text()
    readme = (DATA / "README.md").read_text()
    assert "Open Database License" in licence and "OpenStreetMap contributors" in licence
    assert "© OpenStreetMap contributors" in readme
    assert "geojson-path-finder@2.1.0" in readme
    assert "e43f69b9b18a6b37d6a73fcb95631389be2ebae44cb3b74efc3b493d6033c1e4" in readme


def test_display_geojson_has_classes_and_5_decimals(raw: dict[str, np.ndarray]) -> None:
    doc = json.loads((DATA / "gothenburg.roads.geojson").read_text())
    classes = {str(c) for c in raw["class_names"]}
    assert doc["features"]
    for feature in doc["features"]:
        assert feature["properties"]["h"] in classes
        assert feature["geometry"]["type"] == "MultiLineString"
        for line in feature["geometry"]["coordinates"][:50]:
            assert len(line) >= 2
            for lon, lat in line:
                assert SERVICE_AREA.contains(lat, lon)
                assert round(lon, 5) == lon and round(lat, 5) == lat


# -- graph invariants ---------------------------------------------------------------------------


def test_graph_is_one_strongly_connected_component(graph: RoadGraph, raw: dict[str, np.ndarray]) -> None:
    n = len(raw["node_lat_e6"])
    adj = sp.csr_matrix((np.ones(len(raw["u"])), (raw["u"], raw["v"])), shape=(n, n))
    count, _ = connected_components(adj, directed=True, connection="strong")
    assert count == 1
    assert graph.n == n > 5_000


def test_edges_are_unique_and_polylines_join_their_nodes(raw: dict[str, np.ndarray]) -> None:
    pairs = raw["u"].astype(np.int64) * 1_000_000 + raw["v"]
    assert len(np.unique(pairs)) == len(pairs)
    assert not np.any(raw["u"] == raw["v"])
    ptr = raw["geom_ptr"]
    assert ptr[0] == 0 and ptr[-1] == len(raw["geom_lat_e6"]) and np.all(np.diff(ptr) >= 2)
    assert np.array_equal(raw["geom_lat_e6"][ptr[:-1]], raw["node_lat_e6"][raw["u"]])
    assert np.array_equal(raw["geom_lon_e6"][ptr[1:] - 1], raw["node_lon_e6"][raw["v"]])
    assert np.all(raw["length_m"] > 0) and np.all(raw["time_s"] > 0)
    speed = raw["length_m"] / raw["time_s"] * 3.6
    assert np.allclose(speed, raw["speed_kmh"], rtol=1e-3)


def test_one_way_streets_exist_and_are_not_reversible(graph: RoadGraph, raw: dict[str, np.ndarray]) -> None:
    pairs = set(zip(raw["u"].tolist(), raw["v"].tolist(), strict=True))
    one_way = [(a, b) for a, b in pairs if (b, a) not in pairs]
    assert len(one_way) > 1_000  # roundabouts, motorways, one-way streets
    motorway = graph.class_names.index("motorway")
    motorway_edges = [(a, b) for a, b, c in zip(raw["u"], raw["v"], raw["cls"], strict=True) if c == motorway]
    assert motorway_edges and all((int(b), int(a)) not in pairs for a, b in motorway_edges)
    a, b = one_way[0]
    with pytest.raises(KeyError):
        graph.edge_between(b, a)
    back = graph.route(b, a)  # still reachable (strongly connected), but the long way round
    assert back.time_s > graph.time_s[graph.edge_between(a, b)]


def test_routes_match_a_reference_dijkstra(graph: RoadGraph, raw: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        source = graph.random_node(rng)
        reference = reference_times(raw, source)
        for target in rng.integers(graph.n, size=5).tolist():
            route = graph.route(source, target)
            assert route.time_s == pytest.approx(reference[target], rel=1e-6, abs=1e-3)
            assert route.nodes[0] == source and route.nodes[-1] == target
            length, time_s = graph.path_cost(route.nodes.tolist())
            assert length == pytest.approx(route.length_m) and time_s == pytest.approx(route.time_s)
            assert (route.lat[0], route.lon[0]) == graph.node_position(source)
            assert (route.lat[-1], route.lon[-1]) == graph.node_position(target)
            drawn = float(haversine_m(route.lat[:-1], route.lon[:-1], route.lat[1:], route.lon[1:]).sum())
            assert drawn == pytest.approx(route.length_m, rel=0.01, abs=1.0)
            assert len(route.point_edge) == len(route.lat) - 1


def test_etas_agree_with_routes(graph: RoadGraph) -> None:
    rng = np.random.default_rng(3)
    pickup = graph.random_node(rng)
    drivers = rng.integers(graph.n, size=20)
    to_pickup = graph.etas_to(pickup, drivers)
    from_pickup = graph.etas_from(pickup, drivers)
    for i, d in enumerate(drivers.tolist()):
        assert to_pickup[i] == pytest.approx(graph.route(d, pickup).time_s)
        assert from_pickup[i] == pytest.approx(graph.route(pickup, d).time_s)
    limited = graph.etas_to(pickup, drivers, limit_s=60.0)
    assert np.all((limited <= 60.0) | np.isinf(limited))


def test_duplicate_edges_keep_the_cheapest_instead_of_summing() -> None:
    # Node 0 -> 1 twice (10 s and 3 s) plus 1 -> 0: scipy's CSR would make 0 -> 1 cost 13 s.
    arrays = {
        "node_lat_e6": np.array([57_700_000, 57_701_000], dtype=np.int32),
        "node_lon_e6": np.array([11_970_000, 11_970_000], dtype=np.int32),
        "u": np.array([0, 0, 1], dtype=np.int32),
        "v": np.array([1, 1, 0], dtype=np.int32),
        "length_m": np.array([111.0, 111.0, 111.0], dtype=np.float32),
        "time_s": np.array([10.0, 3.0, 10.0], dtype=np.float32),
        "speed_kmh": np.array([40, 133, 40], dtype=np.uint8),
        "cls": np.array([0, 0, 0], dtype=np.uint8),
        "class_names": np.array(["residential"]),
        "geom_ptr": np.array([0, 2, 4, 6], dtype=np.int32),
        "geom_lat_e6": np.array([57_700_000, 57_701_000] * 2 + [57_701_000, 57_700_000], dtype=np.int32),
        "geom_lon_e6": np.full(6, 11_970_000, dtype=np.int32),
    }
    g = RoadGraph(arrays)
    assert g.route(0, 1).time_s == pytest.approx(3.0)
    assert g.etas_from(0, [1])[0] == pytest.approx(3.0)
    assert g.edge_between(0, 1) == 1


def test_nearest_node_and_bad_input(graph: RoadGraph) -> None:
    lat, lon = graph.node_position(123)
    assert graph.nearest_node(lat, lon) == 123 or graph.node_position(graph.nearest_node(lat, lon)) == (lat, lon)
    node, dist = graph.nearest_node_with_distance(lat + 0.00005, lon)
    assert dist < 10
    _, far = graph.nearest_node_with_distance(59.33, 18.07)  # Stockholm
    assert far > 300_000
    assert list(graph.nearest_nodes([lat], [lon])) == [graph.nearest_node(lat, lon)]
    with pytest.raises(RoutingError):
        graph.route(0, graph.n)
    with pytest.raises(RoutingError):
        graph.nearest_node(float("nan"), 11.9)
    assert graph.route(5, 5).length_m == 0.0
    assert RoadGraph.load() is graph  # cached per process


# -- the build script ---------------------------------------------------------------------------


def _way(coords: list[tuple[float, float]], **tags: str) -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": tags,
        "geometry": {"type": "LineString", "coordinates": [list(c) for c in coords]},
    }


def test_oneway_rules() -> None:
    build = _build_script()
    assert build.direction({"highway": "residential"}) == (True, True)
    assert build.direction({"highway": "residential", "oneway": "yes"}) == (True, False)
    assert build.direction({"highway": "residential", "oneway": "1"}) == (True, False)
    assert build.direction({"highway": "residential", "oneway": "true"}) == (True, False)
    assert build.direction({"highway": "residential", "oneway": "-1"}) == (False, True)
    assert build.direction({"highway": "tertiary", "junction": "roundabout"}) == (True, False)
    assert build.direction({"highway": "motorway"}) == (True, False)
    assert build.direction({"highway": "motorway", "oneway": "no"}) == (True, True)
    assert not build.is_drivable({"highway": "footway"})
    assert not build.is_drivable({"highway": "service", "service": "parking_aisle"})
    assert not build.is_drivable({"highway": "residential", "access": "private"})
    assert build.is_drivable({"highway": "living_street"})


def test_build_script_on_a_small_export(tmp_path: Path) -> None:
    """A square block of two-way streets, a one-way shortcut, a one-way dead end (outside the
    strongly connected component), a footway, and two parallel roads of different speeds."""
    build = _build_script()
    a, b, c, d = (11.970, 57.700), (11.972, 57.700), (11.972, 57.701), (11.970, 57.701)
    mid = (11.971, 57.7005)
    features = [
        _way([a, b], highway="residential"),
        _way([b, c], highway="residential"),
        _way([c, d], highway="residential"),
        _way([d, a], highway="residential"),
        _way([a, mid, c], highway="tertiary", oneway="yes"),  # diagonal a -> c only
        _way([c, (11.9725, 57.7012)], highway="service", oneway="-1"),  # reversed dead end
        _way([a, (11.969, 57.700)], highway="footway"),
        _way([b, (11.971, 57.6995), a], highway="primary"),  # parallel b-a road, faster
    ]
    source = tmp_path / "export.json"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    stats = build.build(source, tmp_path / "out")
    assert stats["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert stats["drivable_ways"] == 7
    g = RoadGraph.from_file(tmp_path / "out" / "gothenburg.graph.npz")
    # a, b, c: the dead end is gone; "mid" and d (a bend of the street c-d-a) are contracted away
    assert g.n == 3
    ia = g.nearest_node(a[1], a[0])
    ic = g.nearest_node(c[1], c[0])
    ib = g.nearest_node(b[1], b[0])
    diagonal = g.edge_between(ia, ic)
    assert g.edge_class(diagonal) == "tertiary"
    assert len(g.edge_polyline(diagonal)[0]) == 3  # a, mid, c
    assert len(g.edge_polyline(g.edge_between(ic, ia))[0]) == 3  # c, d, a (the street round the block)
    assert g.edge_class(g.edge_between(ic, ia)) == "residential"  # not the one-way diagonal
    # b -> a: the primary (60 km/h) wins over the straight residential (30 km/h) road
    assert g.edge_class(g.edge_between(ib, ia)) == "primary"
    assert stats["parallel_edges_dropped"] == 3  # residential a->b, b->a, and a->d->c (diagonal faster)
    roads = json.loads((tmp_path / "out" / "gothenburg.roads.geojson").read_text())
    assert {f["properties"]["h"] for f in roads["features"]} == {"residential", "tertiary", "primary"}
    lines = sum(len(f["geometry"]["coordinates"]) for f in roads["features"])
    assert lines == 5  # a-b, b-c, c-d-a, diagonal, the primary b-a road: two-way stretches once
