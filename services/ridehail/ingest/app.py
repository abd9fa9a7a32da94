"""The ingestion edge: ``POST /ingest/ping`` takes one ``DriverLocation`` as JSON.

* ``rest``: the ping is written to Postgres before the answer (``200``, body ``stored`` or ``stale``);
* ``rest-kafka``: the ping is produced to the broker (``202``, ``acknowledged`` or ``queued``).

Only a driver sends its own pings: every request carries ``Authorization: Bearer <access token>``
of role ``driver`` whose subject is the ping's ``driver_id``, verified offline against the auth
service's JWKS like every other service (401 without a valid token, 403 for another role or
another driver's ping). A token verified once is remembered until it expires (bounded), so a
driver pinging every second costs one signature check per token, not per ping.

``POST /ingest/pings`` takes a JSON array of pings (per-item answers; who may send one, including
the ``admin`` aggregator role: :mod:`ridehail.ingest.batch`). With
``RIDEHAIL_INGEST_GROUP_COMMIT_MS`` > 0 the ``rest`` mode writes single pings in group commits
(:mod:`ridehail.ingest.group_commit`); ``RIDEHAIL_INGEST_WORKERS`` processes may share the port
(:mod:`ridehail.ingest.main`).

Bad input gets a 4xx with a reason (400 malformed JSON, 413 too large, declared or chunked: the
ping body limit covers every route but ``/ingest/pings``, which has its own, 422 invalid ping or
outside the service area) and is counted apart from failures; a backend that is down gets
``503`` with ``Retry-After`` (the REST way of saying "try again later").
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

from ridehail.common.auth_deps import bearer_token
from ridehail.common.auth_tokens import InvalidToken, Principal, TokenVerifier
from ridehail.common.bodylimit import BodySizeLimit
from ridehail.common.health import health_router
from ridehail.common.logging import get_logger
from ridehail.common.security_headers import SecurityHeaders
from ridehail.domain.events import DriverLocation, EventDecoder, EventError
from ridehail.domain.geo import SERVICE_AREA
from ridehail.ingest.batch import BatchRefused, check_sender, parse_batch, results
from ridehail.ingest.settings import IngestSettings
from ridehail.ingest.sinks import KafkaSink, PingSink, PostgresSink, SinkUnavailable

log = get_logger(__name__)

PINGS = Counter("ridehail_ingest_pings_total", "Pings by outcome", ["outcome"])
REJECTED = Counter("ridehail_ingest_rejected_total", "Malformed pings by HTTP status", ["status"])
SECONDS = Histogram(
    "ridehail_ingest_request_seconds",
    "Time to handle one ping (validation + backend)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

_decoder = EventDecoder(DriverLocation)
PING_SCHEMA = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DriverLocation"}}},
    "required": True,
}


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


class PingValidationError(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_ping(body: bytes, max_bytes: int) -> DriverLocation:
    """Decode and check one ping exactly as the event path does (plus the service area)."""
    if len(body) > max_bytes:
        raise PingValidationError(413, f"body too large: {len(body)} bytes > {max_bytes}")
    try:
        event = _decoder.decode(body)
    except EventError as exc:
        status = 400 if exc.reason.startswith(("malformed JSON", "empty message")) else 422
        raise PingValidationError(status, exc.reason) from None
    assert isinstance(event, DriverLocation)
    if not SERVICE_AREA.contains(event.lat, event.lon):
        raise PingValidationError(422, f"position outside the service area: {event.lat},{event.lon}")
    return event


class VerifiedTokens:
    """Tokens already verified, until they expire (at most ``max_tokens``, oldest dropped first)."""

    def __init__(self, verifier: TokenVerifier, max_tokens: int = 100_000) -> None:
        self.verifier = verifier
        self.max_tokens = max_tokens
        self._known: dict[str, Principal] = {}

    async def principal(self, token: str) -> Principal:
        known = self._known.get(token)
        if known is not None and known.exp > time.time():
            return known
        principal = await self.verifier.verify(token, expected_type="access")
        if len(self._known) >= self.max_tokens:
            self._known.pop(next(iter(self._known)))
        self._known[token] = principal
        return principal


class RouteBodyLimits:
    """:class:`BodySizeLimit` per route: ``limits`` maps a path to its own byte limit, every other
    route gets ``max_bytes`` (read ahead, so every route answers 413 alike)."""

    def __init__(self, app: Any, max_bytes: int, limits: dict[str, int], on_reject: Any = None) -> None:
        self.default = BodySizeLimit(app, max_bytes=max_bytes, read_ahead=True, on_reject=on_reject)
        self.routes = {
            path: BodySizeLimit(app, max_bytes=n, read_ahead=True, on_reject=on_reject) for path, n in limits.items()
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        limiter = self.routes.get(scope.get("path", ""), self.default) if scope["type"] == "http" else self.default
        await limiter(scope, receive, send)


def _refused(status: int, reason: str) -> Response:
    headers = (
        {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'} if status == 401 else None
    )
    return _json(status, {"detail": reason}, headers)


def make_sink(settings: IngestSettings) -> PingSink:
    if settings.ingest_mode == "rest":
        if not settings.database_url:
            raise ValueError("rest mode needs RIDEHAIL_DATABASE_URL")
        return PostgresSink(
            settings.database_url,
            settings.ingest_db_pool_size,
            settings.ingest_timeout_s,
            settings.ingest_group_commit_ms / 1000,
            settings.ingest_group_commit_max,
        )
    return KafkaSink(settings.bootstrap, settings.ingest_ack, settings.ingest_timeout_s)


def create_app(
    settings: IngestSettings, sink: PingSink | None = None, verifier: TokenVerifier | None = None
) -> FastAPI:
    the_sink = sink or make_sink(settings)
    tokens = VerifiedTokens(verifier or TokenVerifier(settings.auth_url + "/.well-known/jwks.json"))
    tally: Tally[str] = Tally()
    ok_status = 200 if settings.ingest_mode == "rest" else 202
    retry_after = {"Retry-After": str(settings.ingest_retry_after_s)}
    max_bytes = settings.ingest_max_body_bytes

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await the_sink.start()
        if not tokens.verifier.kids:  # the keys before the first ping (it would wait for them)
            await tokens.verifier.refresh(force=True)  # auth away: logged; the first request tries again
        log.info("ingest_started", mode=settings.ingest_mode, ack=settings.ingest_ack, sink=the_sink.name)
        try:
            yield
        finally:
            await the_sink.close()

    app = FastAPI(title="ridehail ingest", docs_url="/docs", redoc_url=None, lifespan=lifespan)

    def too_large() -> None:
        tally["rejected"] += 1
        REJECTED.labels("413").inc()

    app.add_middleware(
        RouteBodyLimits,
        max_bytes=max_bytes,
        limits={"/ingest/pings": settings.ingest_max_batch_body_bytes},
        on_reject=too_large,
    )
    app.add_middleware(SecurityHeaders)
    app.include_router(health_router("ingest", the_sink.readiness))
    app.state.tally = tally

    @app.post(
        "/ingest/ping",
        summary="One GPS ping (DriverLocation JSON)",
        status_code=ok_status,
        openapi_extra={"requestBody": PING_SCHEMA},
        responses={
            400: {},
            401: {"description": "no valid driver token"},
            403: {"description": "not a driver's token, or another driver's ping"},
            413: {},
            422: {},
            503: {"description": "backend down; see Retry-After"},
        },
    )
    async def ingest_ping(request: Request) -> Response:
        started = time.perf_counter()
        principal, reason = await authenticate(request)
        if principal is None:
            tally["rejected"] += 1
            REJECTED.labels("401").inc()
            return _refused(401, reason)
        try:
            ping = parse_ping(await request.body(), max_bytes)
        except PingValidationError as exc:
            tally["rejected"] += 1
            REJECTED.labels(str(exc.status)).inc()
            return _json(exc.status, {"detail": exc.reason})
        if principal.role != "driver" or principal.sub != ping.driver_id:
            tally["rejected"] += 1
            REJECTED.labels("403").inc()
            who = "a driver's token" if principal.role != "driver" else f"the token of driver {ping.driver_id}"
            return _json(403, {"detail": f"a ping needs {who}"})
        try:
            outcome = await the_sink.write(ping)
        except SinkUnavailable as exc:
            tally["unavailable"] += 1
            PINGS.labels("unavailable").inc()
            return _json(503, {"detail": exc.reason}, retry_after)
        tally[outcome] += 1
        PINGS.labels(outcome).inc()
        SECONDS.observe(time.perf_counter() - started)
        return _json(ok_status, {"status": outcome})

    async def authenticate(request: Request) -> tuple[Principal | None, str]:
        token = bearer_token(request.headers.get("authorization"))
        try:
            principal = await tokens.principal(token) if token is not None else None
        except InvalidToken as exc:
            return None, exc.reason
        return principal, "missing bearer token"

    @app.post(
        "/ingest/pings",
        summary="A JSON array of GPS pings, answered per item",
        status_code=200,
        responses={
            400: {"description": "malformed JSON"},
            401: {"description": "no valid token"},
            403: {"description": "a driver's batch with another driver's ping, or a role that may not send pings"},
            413: {"description": "body or item count over the limit"},
            422: {"description": "not a JSON array, or empty"},
            503: {"description": "backend down; see Retry-After"},
        },
    )
    async def ingest_pings(request: Request) -> Response:
        started = time.perf_counter()
        principal, reason = await authenticate(request)
        if principal is None:
            tally["rejected"] += 1
            REJECTED.labels("401").inc()
            return _refused(401, reason)
        try:
            batch = parse_batch(await request.body(), settings.ingest_max_batch)
            check_sender(principal, batch)
        except BatchRefused as exc:
            tally["rejected"] += 1
            REJECTED.labels(str(exc.status)).inc()
            return _json(exc.status, {"detail": exc.reason})
        try:
            outcomes: list[str] = list(await the_sink.write_many(batch.pings)) if batch.pings else []
        except SinkUnavailable as exc:
            tally["unavailable"] += len(batch.pings)
            PINGS.labels("unavailable").inc(len(batch.pings))
            return _json(503, {"detail": exc.reason}, retry_after)
        for outcome in outcomes:
            tally[outcome] += 1
            PINGS.labels(outcome).inc()
        if batch.rejected:
            tally["rejected_in_batch"] += len(batch.rejected)
            REJECTED.labels("batch_item").inc(len(batch.rejected))
        SECONDS.observe(time.perf_counter() - started)
        return _json(200, {"results": results(batch, outcomes)})

    @app.get("/stats", summary="Pings by outcome since start (this worker process)")
    async def stats() -> dict[str, Any]:
        out: dict[str, Any] = {"mode": settings.ingest_mode, "ack": settings.ingest_ack, "pid": os.getpid(), **tally}
        if isinstance(the_sink, KafkaSink):
            out["delivery_failures_after_accept"] = the_sink.delivery_failures
        return out

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:  # never a bare 500 page
        log.error("ingest_unexpected_error", error=repr(exc)[:300])
        return _json(503, {"detail": "internal error; retry"}, retry_after)

    return app
