"""The gateway's HTTP side: the map page, its static files, the REST API, the auth proxy, health.

The auth service is reverse-proxied under ``/auth/*`` and ``/.well-known/*`` so the browser talks
to one origin only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from ridehail.common.db import ping
from ridehail.common.health import health_router
from ridehail.common.http_errors import error_response, install_error_handlers
from ridehail.common.logging import get_logger
from ridehail.domain.errors import NotFound
from ridehail.gateway.context import GatewayContext, LiveViewer
from ridehail.gateway.drivers_api import router as drivers_router
from ridehail.gateway.quotes_api import router as quotes_router
from ridehail.gateway.rides_api import router as rides_router
from ridehail.paths import data_dir, frontend_dir

log = get_logger(__name__)

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
}
MAX_PROXY_BODY = 64 * 1024


def leaflet_dir() -> Path:
    """Leaflet's files, installed from npm (``npm ci --prefix frontend``)."""
    return frontend_dir() / "node_modules" / "leaflet" / "dist"


def roads_path(ctx: GatewayContext) -> Path:
    return Path(ctx.settings.roads_path) if ctx.settings.roads_path else data_dir() / "gothenburg.roads.geojson"


def create_app(ctx: GatewayContext) -> FastAPI:
    proxy_client: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        proxy_client["c"] = httpx.AsyncClient(base_url=ctx.settings.auth_url, timeout=10.0)
        try:
            yield
        finally:
            await proxy_client["c"].aclose()

    app = FastAPI(title="ridehail gateway", lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.state.ctx = ctx

    async def readiness() -> dict[str, bool]:
        checks = {"live_feed": bool(ctx.feed is not None and ctx.feed.assigned)}
        if ctx.session_factory is not None:
            engine = ctx.session_factory.kw.get("bind")
            checks["database"] = bool(engine is not None and await ping(engine))
        return checks

    app.include_router(health_router("gateway", readiness))
    app.include_router(rides_router)
    app.include_router(quotes_router)
    app.include_router(drivers_router)
    install_error_handlers(app)

    page_cache: dict[str, str] = {}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def map_page() -> HTMLResponse:
        if "html" not in page_cache:
            from ridehail.gateway.map_page import build_map_html

            page_cache["html"] = await asyncio.to_thread(
                build_map_html, ws_port=ctx.settings.gateway_ws_port, tiles=ctx.settings.map_tiles
            )
        return HTMLResponse(page_cache["html"], headers={"Cache-Control": "no-cache"})

    @app.get("/static/roads.geojson", include_in_schema=False)
    async def roads() -> FileResponse:
        path = roads_path(ctx)
        if not path.is_file():
            raise NotFound(f"road data not found at {path.name}; see data/README.md")
        return FileResponse(path, media_type="application/geo+json", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/ws-ticket", summary="A one-time ticket for the live-feed websocket (valid 30 s)")
    async def ws_ticket(principal: LiveViewer) -> dict[str, object]:
        return {"ticket": ctx.tickets.issue(principal), "expires_in": int(ctx.tickets.ttl_s)}

    @app.get("/api/live/stats", summary="The latest stats frame the map clients got")
    async def live_stats() -> dict[str, object]:
        return dict(ctx.stats.last) if ctx.stats is not None else {}

    async def proxy(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_PROXY_BODY:
            return error_response(413, "request body too large")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        client_host = request.client.host if request.client else ""
        headers["x-forwarded-for"] = client_host
        try:
            upstream = await proxy_client["c"].request(
                request.method, request.url.path, params=request.query_params, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("auth_proxy_failed", path=request.url.path, error=type(exc).__name__)
            return error_response(502, "auth service unavailable")
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app.add_api_route("/auth/{path:path}", proxy, methods=methods, include_in_schema=False)
    app.add_api_route("/.well-known/{path:path}", proxy, methods=["GET"], include_in_schema=False)

    if leaflet_dir().is_dir():
        app.mount("/static/leaflet", StaticFiles(directory=leaflet_dir()), name="leaflet")
    else:
        log.warning("leaflet_missing", hint="run: npm ci --prefix frontend")
    app.mount("/static", StaticFiles(directory=frontend_dir() / "static"), name="static")
    return app
