"""The gateway's HTTP side: the map page, its static files, the REST API, the auth proxy, health.

The auth service is reverse-proxied under ``/auth/*`` and ``/.well-known/*`` so the browser talks
to one origin only. A proxied path must be plain segments (letters, digits, ``-``, ``_``, dots
inside a name) under one of those two prefixes: no ``.`` or ``..`` segment, no percent-encoding, no
empty segment, so no spelling of a path reaches anything else of auth (``/metrics``, ``/docs``).
Every route shares one body limit (``RIDEHAIL_GATEWAY_MAX_BODY_BYTES``, declared or chunked: 413)
and every response carries the security headers (:mod:`ridehail.common.security_headers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from ridehail.common.auth_tokens import OAUTH_PATHS
from ridehail.common.bodylimit import BodySizeLimit
from ridehail.common.db import ping
from ridehail.common.health import health_router
from ridehail.common.http_errors import error_response, install_error_handlers
from ridehail.common.logging import get_logger
from ridehail.common.security_headers import DOCS_CDN, SecurityHeaders
from ridehail.domain.errors import NotFound, Unavailable
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
PROXY_PREFIXES = ("/auth", "/.well-known")
_PROXY_SEGMENT = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
MAX_PROXY_SEGMENTS = 4


def proxied_path(raw_path: bytes) -> str | None:
    """The path to ask auth for, or None when ``raw_path`` (as received, still percent-encoded) is
    not plain segments under one of :data:`PROXY_PREFIXES`."""
    if b"%" in raw_path or b"\\" in raw_path or not raw_path.isascii():
        return None
    path = raw_path.decode("ascii")
    for prefix in PROXY_PREFIXES:
        if path.startswith(prefix + "/"):
            segments = path[len(prefix) + 1 :].split("/")
            if len(segments) <= MAX_PROXY_SEGMENTS and all(_PROXY_SEGMENT.fullmatch(seg) for seg in segments):
                return path
    return None


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
    app.add_middleware(
        BodySizeLimit, max_bytes=ctx.settings.gateway_max_body_bytes, read_ahead=True, oauth_paths=OAUTH_PATHS
    )
    app.add_middleware(SecurityHeaders, html_sources={"/api/docs": {"script": DOCS_CDN, "style": DOCS_CDN}})

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
    page_lock = asyncio.Lock()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def map_page(request: Request) -> HTMLResponse:
        from ridehail.gateway.page_policy import build_page_in_child, map_page_policy

        if "html" not in page_cache:
            async with page_lock:  # concurrent first visitors wait for one build
                if "html" not in page_cache:
                    try:
                        page_cache["html"] = await build_page_in_child(
                            ctx.settings.gateway_ws_port, ctx.settings.map_tiles
                        )
                    except RuntimeError as exc:
                        log.error("map_page_build_failed", error=str(exc))
                        raise Unavailable(f"the map page could not be built: {exc}") from None
        html = page_cache["html"]
        policy = map_page_policy(html, request.url.hostname, ctx.settings.gateway_ws_port, ctx.settings.map_tiles)
        return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": policy})

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
        path = proxied_path(request.scope.get("raw_path") or request.url.path.encode())
        if path is None:
            raise NotFound("not found")
        body = await request.body()  # bounded by the body limit (413 beyond it, chunked or not)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        client_host = request.client.host if request.client else ""
        headers["x-forwarded-for"] = client_host
        try:
            upstream = await proxy_client["c"].request(
                request.method, path, params=request.query_params, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("auth_proxy_failed", path=path, error=type(exc).__name__)
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
