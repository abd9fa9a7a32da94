"""The live map in a real headless Chromium against the whole stack (`ridehail up`):
no external request, no JS error, >= 50 cars drawn and moving, a live stats panel, and a rider who
requests a ride with two clicks and sees it assigned within 10 s. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from ridehail.paths import project_root
from tests.fixtures.stack import RunningStack

pytestmark = pytest.mark.e2e

MAC_CHROME = "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"


def chromium_path() -> Path | None:
    """The browser the tests drive: CHROMIUM_PATH, Debian's /usr/bin/chromium, one on PATH, or macOS Chrome."""
    candidates = [os.environ.get("CHROMIUM_PATH", ""), "/usr/bin/chromium"]
    candidates += [shutil.which(n) or "" for n in ("chromium", "chromium-browser", "google-chrome")]
    candidates.append(MAC_CHROME)
    return next((Path(c) for c in candidates if c and Path(c).exists()), None)


ARTIFACTS = project_root() / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


class Browser:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.external: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
def browser_page() -> Iterator[tuple[Browser, object]]:
    from playwright import sync_api

    chromium = chromium_path()
    if chromium is None:
        pytest.fail("no Chromium found: apt-get install -y chromium (or set CHROMIUM_PATH to a Chromium/Chrome binary)")
    record = Browser()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1200, "height": 800})

        def route(r: object) -> None:
            url = r.request.url  # type: ignore[attr-defined]
            record.requests.append(url)
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in LOCAL_HOSTS:
                record.external.append(url)
                r.abort()  # type: ignore[attr-defined]
            else:
                r.continue_()  # type: ignore[attr-defined]

        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda exc: record.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda m: record.errors.append(f"console: {m.text}") if m.type == "error" else None)
        try:
            yield record, page
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "map_browser.png"))
            context.close()
            browser.close()


def wait_js(page: object, expression: str, timeout: float) -> None:
    """Poll ``expression`` in the page until it is truthy (``timeout`` in ms). Playwright's
    wait_for_function evaluates its string with eval(), which the page's CSP forbids (no
    'unsafe-eval'); page.evaluate goes through the DevTools protocol, which the CSP allows."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} still false after {timeout / 1000:.0f} s")
        time.sleep(0.1)


def register_rider(stack: RunningStack) -> tuple[str, str]:
    email = f"rider-{uuid.uuid4().hex[:8]}@example.com"
    password = f"map-test-{uuid.uuid4().hex}"
    r = httpx.post(stack.gateway_url + "/auth/register", json={"email": email, "password": password}, timeout=30)
    assert r.status_code == 201, r.text
    return email, password


FREE_POINT_JS = """([dx, dy]) => {
  const m = window.__ridehail.map, size = m.getSize();
  const pos = window.__ridehail.positions();
  for (let r = 0; r < 400; r += 15) {
    for (let a = 0; a < 8; a++) {
      const x = size.x / 2 + dx + r * Math.cos(a), y = size.y / 2 + dy + r * Math.sin(a);
      const ll = m.containerPointToLatLng([x, y]);
      let free = true;
      for (const id in pos) {
        const p = m.latLngToContainerPoint(pos[id]);
        if (Math.hypot(p.x - x, p.y - y) < 20) { free = false; break; }
      }
      if (free) return [x, y, ll.lat, ll.lng];
    }
  }
  return null;
}"""


def test_live_map_in_chromium(stack: RunningStack, browser_page: tuple[Browser, object]) -> None:
    record, page = browser_page
    page.goto(stack.gateway_url + "/")  # type: ignore[attr-defined]

    wait_js(page, "window.__ridehail && window.__ridehail.carCount() >= 50", 45_000)
    first = page.evaluate("window.__ridehail.positions()")  # type: ignore[attr-defined]
    time.sleep(2)
    second = page.evaluate("window.__ridehail.positions()")  # type: ignore[attr-defined]
    common = set(first) & set(second)
    moved = [i for i in common if first[i] != second[i]]
    assert len(common) >= 50
    assert len(moved) >= 10, f"only {len(moved)} of {len(common)} cars moved in 2 s"

    wait_js(
        page,
        "(() => { const s = window.__ridehail.stats();"
        " return s.cars > 0 && s.ev_in > 0 && s.fr_out > 0 && s.p50 !== null && s.p50 !== undefined; })()",
        15_000,
    )
    stats = page.evaluate("window.__ridehail.stats()")  # type: ignore[attr-defined]
    assert int(page.inner_text("#rh-cars")) > 0  # type: ignore[attr-defined]
    assert float(page.inner_text("#rh-evin")) > 0  # type: ignore[attr-defined]
    assert page.inner_text("#rh-p50").endswith("ms")  # type: ignore[attr-defined]
    assert stats["mode"] == "live"
    assert "OpenStreetMap" in page.inner_text(".leaflet-control-attribution")  # type: ignore[attr-defined]

    # the page reconnects by itself and the cars keep coming
    frames_before = page.evaluate("window.__ridehail.stats().frames")  # type: ignore[attr-defined]
    page.evaluate("window.__ridehail.dropConnection()")  # type: ignore[attr-defined]
    wait_js(page, "window.__ridehail.reconnects() >= 1", 5_000)
    wait_js(page, "window.__ridehail.connected()", 15_000)
    wait_js(page, f"window.__ridehail.stats().frames > {frames_before} + 5", timeout=15_000)

    # a rider logs in on the page and requests a ride with two clicks
    email, password = register_rider(stack)
    page.fill("#rh-user", email)  # type: ignore[attr-defined]
    page.fill("#rh-pass", password)  # type: ignore[attr-defined]
    page.click("#rh-login button")  # type: ignore[attr-defined]
    page.wait_for_selector("#rh-who:not([hidden])", timeout=15_000)  # type: ignore[attr-defined]
    wait_js(page, "window.__ridehail.connected()", 15_000)
    pickup = page.evaluate(FREE_POINT_JS, [-120, 0])  # type: ignore[attr-defined]
    dropoff = page.evaluate(FREE_POINT_JS, [160, 80])  # type: ignore[attr-defined]
    assert pickup and dropoff
    page.mouse.click(pickup[0], pickup[1])  # type: ignore[attr-defined]
    page.mouse.click(dropoff[0], dropoff[1])  # type: ignore[attr-defined]
    clicked = time.monotonic()
    wait_js(page, "window.__ridehail.ride() !== null", 10_000)
    wait_js(
        page,
        "['assigned','arrived','in_progress','completed'].includes(window.__ridehail.ride().status)",
        max(1, 10_000 - int((time.monotonic() - clicked) * 1000)),
    )
    ride = page.evaluate("window.__ridehail.ride()")  # type: ignore[attr-defined]
    assert ride["driver_id"], ride
    panel = page.inner_text("#rh-ride")  # type: ignore[attr-defined]
    assert ride["ride_id"][:8] in panel and "car " in panel, panel  # the rider sees the ride and its car
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map_ride_assigned.png"))  # type: ignore[attr-defined]

    assert record.external == [], f"external requests: {record.external}"
    assert not record.errors, record.errors
    assert any(u.endswith("/static/leaflet/leaflet.js") for u in record.requests)
