"""The live map in Chromium against hostile data and links (the whole stack): a car whose id is
HTML shows as text in its popup and runs nothing; the page's Content-Security-Policy is enforced
(an injected inline script does not run) while the map itself raises no CSP violation; and a
``?ws=`` in the link never sends the user anywhere but the gateway's own websocket."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from ridehail.common.kafka import EventProducer
from ridehail.domain.events import DriverLocation, encode
from ridehail.domain.topics import DRIVER_LOCATION
from tests.e2e import test_map_browser
from tests.e2e.test_map_browser import Browser, wait_js
from tests.fixtures.stack import RunningStack

pytestmark = pytest.mark.e2e

browser_page = test_map_browser.browser_page  # the same headless Chromium fixture

HOSTILE_ID = '<img src=x onerror="window.__pwned=1">'


def test_hostile_car_ids_stay_text_and_the_csp_holds(stack: RunningStack, browser_page: tuple[Browser, object]) -> None:
    record, page = browser_page
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))  # type: ignore[attr-defined]
    response = page.goto(stack.gateway_url + "/?ws=ws://127.0.0.1:9/steal")  # type: ignore[attr-defined]
    csp = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self' 'sha256-" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    wait_js(page, "window.__ridehail && window.__ridehail.connected()", 30_000)
    ws_port = stack.port("gateway_ws")
    assert sockets and all(urlparse(u).port == ws_port and urlparse(u).hostname == "127.0.0.1" for u in sockets)

    lat, lon = page.evaluate("(() => { const c = window.__ridehail.map.getCenter(); return [c.lat, c.lng]; })()")  # type: ignore[attr-defined]
    producer = EventProducer(stack.bootstrap, "test-hostile-map")
    try:
        deadline, seq = time.monotonic() + 30, 0
        while True:  # the feed starts at the latest offset: ping until the car is on the page
            seq += 1
            ping = DriverLocation(driver_id=HOSTILE_ID, seq=seq, lat=lat, lon=lon, status="on_trip")
            producer.produce(DRIVER_LOCATION.name, encode(ping), HOSTILE_ID)
            producer.flush(5)
            if HOSTILE_ID in page.evaluate("window.__ridehail.positions()"):  # type: ignore[attr-defined]
                break
            assert time.monotonic() < deadline, "the car never reached the page"
            time.sleep(0.5)
    finally:
        producer.close(5)
    time.sleep(1.6)  # the marker has finished moving to its position
    x, y = page.evaluate(  # type: ignore[attr-defined]
        "(id) => { const m = window.__ridehail.map, p = window.__ridehail.positions()[id];"
        " const c = m.latLngToContainerPoint(p), r = m.getContainer().getBoundingClientRect();"
        " return [r.left + c.x, r.top + c.y]; }",
        HOSTILE_ID,
    )
    page.mouse.click(x, y)  # type: ignore[attr-defined]
    popup = page.wait_for_selector(".leaflet-popup-content", timeout=5_000)  # type: ignore[attr-defined]
    assert HOSTILE_ID in popup.inner_text()
    assert page.locator(".leaflet-popup-content img").count() == 0  # type: ignore[attr-defined]
    assert page.evaluate("window.__pwned") is None  # type: ignore[attr-defined]
    assert not record.errors, record.errors  # the map ran under its CSP without one violation

    # the policy is enforced: an inline script added to the page does not run
    page.evaluate(  # type: ignore[attr-defined]
        "() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
        " document.body.appendChild(s); }"
    )
    time.sleep(0.3)
    assert page.evaluate("window.__inline") is None  # type: ignore[attr-defined]
    assert any("Content Security Policy" in e for e in record.errors), record.errors
