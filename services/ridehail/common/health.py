"""``/healthz``, ``/readyz`` and ``/metrics`` for every service, plus a small in-loop HTTP server
for services whose main job is not HTTP (matching, simulator)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]] | dict[str, bool]]


def health_router(service: str, readiness: ReadinessCheck) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @router.get("/readyz", summary="Readiness: every dependency answers", responses={503: {}})
    async def readyz(response: Response) -> dict[str, object]:
        result = readiness()
        checks = await result if asyncio.iscoroutine(result) else result
        ready = all(checks.values())  # type: ignore[union-attr]
        if not ready:
            response.status_code = 503
        return {"ready": ready, "service": service, "checks": checks}

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside a service's own event loop: the service handles SIGINT/SIGTERM
    itself (and sets ``should_exit``), so uvicorn must not take the signals over while it serves."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    return EmbeddedServer(config)


def health_app(service: str, readiness: ReadinessCheck) -> FastAPI:
    app = FastAPI(title=f"ridehail {service}", docs_url=None, redoc_url=None)
    app.include_router(health_router(service, readiness))
    return app
