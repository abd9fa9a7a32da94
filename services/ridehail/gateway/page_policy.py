"""The live map page's Content-Security-Policy (without folium: the gateway computes it per request
from the page that a one-shot child built, :mod:`ridehail.gateway.map_page`)."""

from __future__ import annotations

import asyncio
import re
import sys

from ridehail.common.security_headers import html_policy

HOST_NAME = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")  # a DNS name, IPv4 or [IPv6]
TILE_SERVERS = {"osm": "https://tile.openstreetmap.org"}
BUILD_TIMEOUT_S = 60.0


def map_page_policy(html: str, host: str | None, ws_port: int, tiles: str = "none") -> str:
    """The page's Content-Security-Policy: its own origin, folium's inline scripts and styles by
    hash (computed from the page as built, so exactly those run), the live feed's websocket on
    ``host`` (the host the browser asked for; a malformed one gets no websocket source), and the
    tile server when the opt-in basemap is on. Never 'unsafe-inline' or 'unsafe-eval'."""
    connect = []
    if host and HOST_NAME.fullmatch(host):
        connect = [f"ws://{host}:{ws_port}", f"wss://{host}:{ws_port}"]
    img = [TILE_SERVERS[tiles]] if tiles in TILE_SERVERS else []
    return html_policy(html.encode(), connect=connect, img=img)


async def build_page_in_child(ws_port: int, tiles: str) -> str:
    """The map page's HTML, built by ``python -m ridehail.gateway.map_page`` in a child process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ridehail.gateway.map_page",
        "--ws-port",
        str(ws_port),
        "--tiles",
        tiles,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), BUILD_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(f"building the map page took over {BUILD_TIMEOUT_S:.0f} s") from None
    finally:
        if proc.returncode is None:  # timed out, or the request was cancelled: no child outlives it
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        last = (err.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"building the map page failed (exit {proc.returncode}): {last}")
    return out.decode("utf-8")
