"""The surge layer in a real headless Chromium against the whole stack (`ridehail up`): a
SurgeChanged on the topic becomes a coloured hexagon on the map, and the layer switch hides and
shows it. (Browser test: marked e2e like tests/e2e; it shares their stack fixture.)"""

from __future__ import annotations

import time

import h3
import pytest

from ridehail.common.kafka import EventProducer
from ridehail.domain.events import SurgeChanged, encode
from ridehail.domain.topics import PRICING_SURGE
from ridehail.paths import project_root
from tests.e2e import test_map_browser
from tests.e2e.test_map_browser import Browser, wait_js
from tests.fixtures.stack import RunningStack

pytestmark = pytest.mark.e2e

browser_page = test_map_browser.browser_page  # the same headless Chromium fixture

ARTIFACTS = project_root() / "test-artifacts"


def test_surge_hexagons_on_the_map_and_the_layer_switch(
    stack: RunningStack, browser_page: tuple[Browser, object]
) -> None:
    record, page = browser_page
    page.goto(stack.gateway_url + "/")  # type: ignore[attr-defined]
    wait_js(page, "window.__ridehail && window.__ridehail.connected()", 30_000)
    centre = page.evaluate("(() => { const c = window.__ridehail.map.getCenter(); return [c.lat, c.lng]; })()")  # type: ignore[attr-defined]
    cell = h3.latlng_to_cell(centre[0], centre[1], 8)
    producer = EventProducer(stack.bootstrap, "test-surge-map")
    try:
        deadline = time.monotonic() + 30
        while True:  # the gateway's feed starts at the latest offset: publish until the page has it
            producer.produce(PRICING_SURGE.name, encode(SurgeChanged(cell=cell, resolution=8, multiplier=2.4)), cell)
            producer.flush(5)
            got = page.evaluate("window.__ridehail.surge()")  # type: ignore[attr-defined]
            if got.get(cell) == 2.4:
                break
            assert time.monotonic() < deadline, f"surge never reached the page: {got}"
            time.sleep(0.5)
    finally:
        producer.close(5)

    assert page.evaluate("window.__ridehail.surgeVisible()")  # type: ignore[attr-defined]
    drawn = page.evaluate("window.__ridehail.surgeDrawn()")  # type: ignore[attr-defined]
    assert drawn[cell] == "rgb(255,87,32)"  # 2.4: between orange (2.0) and red (3.0)
    assert page.locator(".leaflet-surge-pane path, .leaflet-surge-pane canvas").count() >= 1  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map_surge.png"))  # type: ignore[attr-defined]

    toggle = page.get_by_label("surge pricing")  # type: ignore[attr-defined]
    toggle.uncheck()
    assert not page.evaluate("window.__ridehail.surgeVisible()")  # type: ignore[attr-defined]
    assert page.evaluate("window.__ridehail.surgeDrawn()") == {}  # type: ignore[attr-defined]
    toggle.check()
    assert page.evaluate("window.__ridehail.surgeVisible()")  # type: ignore[attr-defined]
    assert not record.errors, record.errors
    assert record.external == [], record.external
