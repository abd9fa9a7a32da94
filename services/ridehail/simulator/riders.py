"""Simulated riders: request rides through the REST API at a Poisson rate, as real users would.

Each simulated rider is an ordinary account (role ``rider``): registered through
``POST /auth/register`` (409 = it already exists), logged in through the OAuth2 password flow
(``POST /auth/token``), then ``POST /api/rides`` on the gateway with the bearer token. Pickups and
drop-offs are intersections of the road network, 1-8 km apart. Open rides are polled
(``GET /api/rides/{id}``); a ride still waiting for a driver after ``patience_s`` is cancelled
(``DELETE /api/rides/{id}``).

Nothing here can crash the simulator: a refused connection or a 5xx backs off exponentially
(up to 30 s) with one log line per failure; a 4xx is logged with the server's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import Counter

from ridehail.common.logging import get_logger
from ridehail.domain.geo import haversine_m
from ridehail.domain.roads import RoadGraph

log = get_logger(__name__)

RIDER_REQUESTS = Counter("ridehail_simulator_rider_requests_total", "Ride requests by outcome", ["outcome"])

TERMINAL = {"completed", "cancelled", "expired"}
WAITING = {"requested", "offered"}  # still no driver on the way
MAX_BACKOFF_S = 30.0


class RiderApiError(RuntimeError):
    """A REST call that failed; ``retry`` says whether backing off and retrying makes sense."""

    def __init__(self, message: str, retry: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after


@dataclass(slots=True)
class Account:
    email: str
    token: str | None = None
    expires_at: float = 0.0
    registered: bool = False


@dataclass(slots=True)
class OpenRide:
    ride_id: str
    account: Account
    requested_at: float
    status: str = "requested"


@dataclass(slots=True)
class RiderStats:
    requested: int = 0
    accepted: int = 0
    failed: int = 0
    cancelled: int = 0
    finished: dict[str, int] = field(default_factory=dict)


def random_trip(
    graph: RoadGraph, rng: random.Random, min_m: float = 1_000.0, max_m: float = 8_000.0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two intersections of the network between ``min_m`` and ``max_m`` apart (straight line)."""
    a = rng.randrange(graph.n)
    b = rng.randrange(graph.n)
    for _ in range(50):
        d = haversine_m(graph.lat[a], graph.lon[a], graph.lat[b], graph.lon[b])
        if min_m <= d <= max_m:
            break
        b = rng.randrange(graph.n)
    return (round(float(graph.lat[a]), 6), round(float(graph.lon[a]), 6)), (
        round(float(graph.lat[b]), 6),
        round(float(graph.lon[b]), 6),
    )


class RiderSimulator:
    def __init__(
        self,
        graph: RoadGraph,
        auth_url: str,
        gateway_url: str,
        rides_per_min: float,
        accounts: int = 20,
        password: str = "sim-rider-password-2024",
        patience_s: float = 120.0,
        seed: int | None = None,
        email_prefix: str = "sim-rider",
        poll_interval_s: float = 2.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.graph = graph
        self.auth_url = auth_url.rstrip("/")
        self.gateway_url = gateway_url.rstrip("/")
        self.rate = rides_per_min / 60.0
        self.password = password
        self.patience_s = patience_s
        self.poll_interval_s = poll_interval_s
        self.rng = random.Random(seed)
        self.accounts = [Account(f"{email_prefix}-{i + 1:04d}@ridehail-demo.org") for i in range(accounts)]
        self.open: dict[str, OpenRide] = {}
        self.stats = RiderStats()
        self._client = client
        self._backoff_s = 0.0
        self._blocked_until = 0.0
        self._inflight: set[asyncio.Task[str | None]] = set()
        self._requesting: set[str] = set()  # emails with a request in flight
        self._max_inflight = 64

    # -- main loop -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        if self.rate <= 0:
            return
        owns_client = self._client is None
        client = self._client or httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0))
        self._client = client
        poller = asyncio.create_task(self._poll_loop(stop), name="rider-poll")
        log.info("riders_started", rides_per_min=round(self.rate * 60, 2), accounts=len(self.accounts))
        try:
            while not stop.is_set():
                wait = self.rng.expovariate(self.rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                if stop.is_set():
                    break
                if time.monotonic() < self._blocked_until:
                    RIDER_REQUESTS.labels("skipped_backoff").inc()
                    continue
                if len(self._inflight) >= self._max_inflight:
                    RIDER_REQUESTS.labels("skipped_busy").inc()
                    continue
                task = asyncio.create_task(self.request_one())
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        finally:
            poller.cancel()
            for t in [poller, *self._inflight]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if owns_client:
                await client.aclose()
                self._client = None

    def free_accounts(self) -> list[Account]:
        """Accounts with no ride open or being requested (the gateway allows one active ride each)."""
        busy = {ride.account.email for ride in self.open.values()} | self._requesting
        return [a for a in self.accounts if a.email not in busy]

    async def request_one(self) -> str | None:
        """Request one ride as a random free rider; returns the ride id, or None (logged) on failure."""
        free = self.free_accounts()
        if not free:
            RIDER_REQUESTS.labels("skipped_no_free_rider").inc()  # more accounts: RIDEHAIL_RIDER_ACCOUNTS
            return None
        account = self.rng.choice(free)
        self._requesting.add(account.email)
        try:
            return await self._request_as(account)
        finally:
            self._requesting.discard(account.email)

    async def _request_as(self, account: Account) -> str | None:
        pickup, dropoff = self.random_trip()
        self.stats.requested += 1
        try:
            token = await self._token(account)
            body = {"pickup": {"lat": pickup[0], "lon": pickup[1]}, "dropoff": {"lat": dropoff[0], "lon": dropoff[1]}}
            resp = await self._call("POST", f"{self.gateway_url}/api/rides", json=body, token=token)
            if resp.status_code == 401:
                account.token = None
                token = await self._token(account)
                resp = await self._call("POST", f"{self.gateway_url}/api/rides", json=body, token=token)
            if resp.status_code != 202:
                raise _http_error("request ride", resp)
            ride_id = str(resp.json()["ride_id"])
        except (RiderApiError, KeyError, ValueError) as exc:
            self._failed("request_ride", exc)
            return None
        self._succeeded()
        self.stats.accepted += 1
        RIDER_REQUESTS.labels("accepted").inc()
        self.open[ride_id] = OpenRide(ride_id, account, time.monotonic())
        log.info("ride_requested", ride_id=ride_id, rider=account.email)
        return ride_id

    def random_trip(
        self, min_m: float = 1_000.0, max_m: float = 8_000.0
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        return random_trip(self.graph, self.rng, min_m, max_m)

    # -- polling and cancelling ------------------------------------------------------------------
    async def _poll_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval_s)
            if stop.is_set() or time.monotonic() < self._blocked_until:
                continue
            await self.poll_open_rides()

    async def poll_open_rides(self) -> None:
        for ride in list(self.open.values()):
            try:
                token = await self._token(ride.account)
                resp = await self._call("GET", f"{self.gateway_url}/api/rides/{ride.ride_id}", token=token)
                if resp.status_code == 404:
                    self.open.pop(ride.ride_id, None)
                    continue
                if resp.status_code != 200:
                    raise _http_error("get ride", resp)
                ride.status = str(resp.json().get("status", ride.status))
                if ride.status in TERMINAL:
                    self.open.pop(ride.ride_id, None)
                    self.stats.finished[ride.status] = self.stats.finished.get(ride.status, 0) + 1
                    continue
                if ride.status in WAITING and time.monotonic() - ride.requested_at > self.patience_s:
                    await self._cancel(ride, token)
            except (RiderApiError, ValueError) as exc:
                self._failed("poll_ride", exc)
                return

    async def _cancel(self, ride: OpenRide, token: str) -> None:
        resp = await self._call("DELETE", f"{self.gateway_url}/api/rides/{ride.ride_id}", token=token)
        if resp.status_code in (200, 202):
            self.open.pop(ride.ride_id, None)
            self.stats.cancelled += 1
            RIDER_REQUESTS.labels("cancelled").inc()
            log.info(
                "ride_cancelled_by_rider", ride_id=ride.ride_id, waited_s=round(time.monotonic() - ride.requested_at)
            )
        elif resp.status_code == 409:
            log.info("ride_cancel_too_late", ride_id=ride.ride_id, reason=_detail(resp))
        else:
            raise _http_error("cancel ride", resp)

    # -- auth ------------------------------------------------------------------------------------
    async def _token(self, account: Account) -> str:
        if account.token and time.monotonic() < account.expires_at - 30:
            return account.token
        if not account.registered:
            resp = await self._call(
                "POST",
                f"{self.auth_url}/auth/register",
                json={"email": account.email, "password": self.password, "role": "rider"},
            )
            if resp.status_code not in (200, 201, 409):
                raise _http_error("register rider", resp)
            account.registered = True
        resp = await self._call(
            "POST", f"{self.auth_url}/auth/token", data={"username": account.email, "password": self.password}
        )
        if resp.status_code != 200:
            if resp.status_code in (400, 401):
                account.registered = False  # e.g. the auth database was reset: register again next time
            raise _http_error("log in rider", resp)
        payload = resp.json()
        account.token = str(payload["access_token"])
        account.expires_at = time.monotonic() + float(payload.get("expires_in", 300))
        return account.token

    # -- HTTP plumbing ---------------------------------------------------------------------------
    async def _call(self, method: str, url: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        assert self._client is not None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            return await self._client.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise RiderApiError(f"{method} {url}: {type(exc).__name__}: {exc}", retry=True) from None

    def _failed(self, what: str, exc: Exception) -> None:
        self.stats.failed += 1
        RIDER_REQUESTS.labels("failed").inc()
        retry = getattr(exc, "retry", False)
        if retry:
            self._backoff_s = min(MAX_BACKOFF_S, max(1.0, self._backoff_s * 2))
            hint = getattr(exc, "retry_after", None)
            wait = max(self._backoff_s, hint or 0.0)
            self._blocked_until = time.monotonic() + wait
            log.warning("rider_api_unavailable", action=what, error=str(exc)[:300], backoff_s=round(wait, 1))
        else:
            log.warning("rider_api_rejected", action=what, error=str(exc)[:300])

    def _succeeded(self) -> None:
        self._backoff_s = 0.0


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return str(body)[:200]


def _http_error(action: str, resp: httpx.Response) -> RiderApiError:
    retry_after: float | None = None
    with contextlib.suppress(ValueError, TypeError):
        retry_after = float(resp.headers.get("retry-after", ""))
    retry = resp.status_code >= 500 or resp.status_code == 429
    return RiderApiError(f"{action}: HTTP {resp.status_code}: {_detail(resp)}", retry=retry, retry_after=retry_after)
