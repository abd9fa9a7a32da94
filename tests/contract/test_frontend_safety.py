"""The map's JavaScript, read as text: nothing writes HTML from strings (data goes in with
textContent or as DOM nodes: the browser test proves it with a hostile car id), no websocket URL
is taken from the page's query string, every file the page loads exists and none is over 400
lines. The rules the e2e test cannot cover for every line of code."""

from __future__ import annotations

import re

import pytest

from ridehail.gateway.map_page import SCRIPTS, build_map_html
from ridehail.paths import frontend_dir

STATIC = frontend_dir() / "static"
FILES = sorted(STATIC.glob("*.js"))

HTML_SINKS = [
    r"\.innerHTML\b",
    r"\.outerHTML\b",
    r"insertAdjacentHTML",
    r"document\.write",
    r"\.bindPopup\(",  # Leaflet sets a string popup as HTML
    r"\.setContent\(\s*['\"+]",  # a string (not a node) as popup content
    r"\.bindTooltip\(\s*(['\"]|\w+\s*[,)])",  # a string tooltip is HTML too: pass a node
    r"\beval\(",
    r"new Function\(",
]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_html_from_strings_and_no_websocket_url_from_the_query(path) -> None:  # type: ignore[no-untyped-def]
    text = path.read_text()
    for sink in HTML_SINKS:
        assert not re.search(sink, text), f"{path.name}: {sink}"
    assert not re.search(r"searchParams\.get\(\s*['\"]ws['\"]|URLSearchParams\([^)]*\)\.get\(\s*['\"]ws['\"]", text)
    assert len(text.splitlines()) <= 400, path.name


def test_the_page_loads_every_script_of_the_map_and_only_those() -> None:
    html = build_map_html(8002)
    assert re.findall(r'<script src="(/static/[^"]+)"', html)[: len(SCRIPTS)] == list(SCRIPTS)
    for script in SCRIPTS:
        assert (STATIC / script.removeprefix("/static/")).is_file(), script
    assert {f"/static/{p.name}" for p in FILES} == set(SCRIPTS)
    assert "style=" not in html.split("<body>", 1)[1], "inline style attributes need 'unsafe-inline'"
