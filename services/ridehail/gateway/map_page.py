"""Builds the live map page with folium: local Leaflet, roads on canvas, cars on their own canvas.

The page makes no external request by default: Leaflet comes from ``/static/leaflet/`` (npm,
installed into ``frontend/node_modules`` by ``npm ci --prefix frontend``), the roads from
``/static/roads.geojson`` and the live feed from the gateway's websocket port on the same host.
An online basemap (OpenStreetMap tiles) is opt-in with ``RIDEHAIL_MAP_TILES=osm``. The page is
served with a Content-Security-Policy that allows exactly that
(:func:`ridehail.gateway.page_policy.map_page_policy`).

The gateway builds the page once, in a one-shot child (``python -m ridehail.gateway.map_page``):
folium, branca and jinja2 stay out of the long-lived gateway process (about 30 MB).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import folium
from branca.element import Element, MacroElement
from jinja2 import Template

from ridehail.domain.geo import SERVICE_AREA

# The map's code, in load order (car drawing, surge, feed and panel before the file that wires them)
SCRIPTS = ("/static/cars.js", "/static/surge.js", "/static/feed.js", "/static/panel.js", "/static/map.js")
LEAFLET_JS = "/static/leaflet/leaflet.js"
LEAFLET_CSS = "/static/leaflet/leaflet.css"
ATTRIBUTION = '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'

PANEL_HTML = """
<div id="rh-panel" class="rh-panel">
  <div class="rh-title">ridehail <span id="rh-mode" class="rh-mode">connecting</span></div>
  <table class="rh-stats">
    <tr><td>cars online</td><td id="rh-cars">0</td></tr>
    <tr><td>events in /s</td><td id="rh-evin">0</td></tr>
    <tr><td>frames out /s</td><td id="rh-frout">0</td></tr>
    <tr><td>GPS&rarr;browser p50</td><td id="rh-p50">-</td></tr>
    <tr><td>GPS&rarr;browser p99</td><td id="rh-p99">-</td></tr>
    <tr><td>matching lag</td><td id="rh-lag">-</td></tr>
  </table>
  <div class="rh-legend">
    <span><i class="rh-dot rh-available"></i>available</span>
    <span><i class="rh-dot rh-offered"></i>offered</span>
    <span><i class="rh-dot rh-to-pickup"></i>to pickup</span>
    <span><i class="rh-dot rh-on-trip"></i>on trip</span>
    <span><i class="rh-dot rh-offline"></i>offline</span>
  </div>
  <form id="rh-login" class="rh-login" autocomplete="on">
    <input id="rh-user" name="username" placeholder="rider email" autocomplete="username">
    <input id="rh-pass" name="password" type="password" placeholder="password" autocomplete="current-password">
    <button type="submit">log in</button>
  </form>
  <div id="rh-who" class="rh-who" hidden>
    <span id="rh-whoami"></span> <button id="rh-logout" type="button">log out</button>
    <div class="rh-hint">Click the map twice: pickup, then drop-off.</div>
  </div>
  <div id="rh-ride" class="rh-ride"></div>
  <div id="rh-msg" class="rh-msg"></div>
</div>
"""


class LiveLayer(MacroElement):
    """Starts the live map script (``/static/map.js``) against this folium map."""

    _template = Template(
        """
{% macro script(this, kwargs) %}
RidehailMap.start({{ this._parent.get_name() }}, {{ this.config|tojson }});
{% endmacro %}"""
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # branca is untyped
        self._name = "LiveLayer"
        self.config = config


def build_map(ws_port: int, tiles: str = "none") -> folium.Map:
    lat, lon = SERVICE_AREA.center
    m = folium.Map(
        location=[lat, lon],
        zoom_start=13,
        tiles=None,
        prefer_canvas=True,
        control_scale=True,
        min_zoom=11,
        max_zoom=18,
    )
    # instance attributes: add_js_link would mutate folium's module-level defaults
    m.default_js = [("leaflet", LEAFLET_JS)]
    m.default_css = [("leaflet_css", LEAFLET_CSS), ("ridehail_css", "/static/map.css")]
    if tiles == "osm":
        folium.TileLayer("OpenStreetMap", max_zoom=19, attr=ATTRIBUTION).add_to(m)
    folium.map.CustomPane("roads", z_index=150, pointer_events=False).add_to(m)
    root: Any = m.get_root()  # a branca Figure (header, html); its stubs say Element
    for script in SCRIPTS:
        root.header.add_child(Element(f'<script src="{script}"></script>'))
    root.header.add_child(Element("<title>ridehail live map</title>"))
    root.html.add_child(Element(PANEL_HTML))
    config = {
        "wsPort": ws_port,
        "roadsUrl": "/static/roads.geojson",
        "attribution": ATTRIBUTION,
        "tiles": tiles,
        "serviceArea": [SERVICE_AREA.min_lon, SERVICE_AREA.min_lat, SERVICE_AREA.max_lon, SERVICE_AREA.max_lat],
    }
    LiveLayer(config).add_to(m)
    return m


def build_map_html(ws_port: int, tiles: str = "none") -> str:
    return build_map(ws_port, tiles).get_root().render()


def main(argv: list[str] | None = None) -> int:
    """Write the page's HTML to standard output (what the gateway serves)."""
    parser = argparse.ArgumentParser(prog="python -m ridehail.gateway.map_page")
    parser.add_argument("--ws-port", type=int, required=True)
    parser.add_argument("--tiles", default="none")
    args = parser.parse_args(argv)
    sys.stdout.buffer.write(build_map_html(args.ws_port, args.tiles).encode("utf-8"))  # read back as UTF-8
    return 0


if __name__ == "__main__":
    sys.exit(main())
