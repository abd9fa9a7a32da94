"""The fan-out core: latest state per car, one frame round per interval, every client served from it.

The live feed calls :meth:`Hub.apply_location` / :meth:`Hub.apply_ride_event` and sets
:attr:`Hub.woken`; a frame loop calls :meth:`Hub.frame_round` every ``frame_interval_ms`` (or, with
``frame_on_change``, at most that often, as soon as it was woken); a round in which nothing changed
sends nothing. Nothing here waits on a client:

* Each car changed in a round is encoded once; clients with the same viewport share one frame.
* A client's progress is one number (the round of its last frame): a client that skipped rounds
  gets, in its next frame, every car in its viewport changed since then, each at its latest
  state. So a slow client costs no memory per missed ping: its backlog collapses by design.
* A client whose transport holds more than ``write_limit`` unsent bytes gets no frame; if it stays
  there for ``slow_grace_s`` it is closed with code 4008.

The frame format is documented in ``docs/gateway.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import h3
import orjson
from websockets.asyncio.server import ServerConnection, broadcast

from ridehail.common.logging import get_logger
from ridehail.domain.events import (
    DriverLocation,
    RideAssigned,
    RideCancelled,
    RideCompleted,
    RideExpired,
    RideOfferAnswered,
    RideOffered,
    RideOfferTimedOut,
    SurgeChanged,
)
from ridehail.domain.geo import SERVICE_AREA
from ridehail.domain.geo import BBox as Area
from ridehail.domain.surge import DEFAULT_RESOLUTION
from ridehail.gateway import metrics
from ridehail.gateway.live_state import (
    OFFLINE,
    RIDE_EVENT_QUEUE,
    STATUS_CODES,
    BBox,
    Car,
    Client,
    HubCounters,
    car_frame,
    in_bbox,
)

log = get_logger(__name__)

PRESENCE_CHECK_S = 0.5
CLOSE_TOO_SLOW = 4008
E2E_SAMPLES_PER_ROUND = 64

# Surge cells are computed from pickups and pings inside the service area: a cell's centre can lie
# up to one cell (~0.5 km at resolution 8, a few km at 5) outside it, never further.
SURGE_AREA = Area(
    SERVICE_AREA.min_lat - 0.1, SERVICE_AREA.min_lon - 0.2, SERVICE_AREA.max_lat + 0.1, SERVICE_AREA.max_lon + 0.2
)


class Hub:
    def __init__(
        self,
        *,
        write_limit: int = 1_048_576,
        slow_grace_s: float = 5.0,
        car_ttl_s: float = 120.0,
        surge_resolution: int = DEFAULT_RESOLUTION,
        presence_ttl_s: float = 5.0,
    ) -> None:
        self.write_limit = write_limit
        self.slow_grace_s = slow_grace_s
        self.car_ttl_s = car_ttl_s
        self.presence_ttl_s = presence_ttl_s
        self._last_presence_check = time.monotonic()
        self.cars: dict[str, Car] = {}
        self.clients: set[Client] = set()
        self.round = 0
        self.counters = HubCounters()
        self._changed: dict[str, None] = {}
        self.woken = asyncio.Event()  # set by the live feed when it applied messages: see frame_loop
        self._ride_of_driver: dict[str, str] = {}
        self._offer_of_driver: dict[str, str] = {}  # driver -> ride it is offered
        self._last_prune = time.monotonic()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        # surge per H3 cell (from the pricing topic): read by quotes, sent to clients as "surge" frames
        self.surge: dict[str, float] = {}
        self.surge_resolution = surge_resolution  # pricing's (a setting): never taken from an event
        self._surge_pending: dict[str, float] = {}
        self._surge_boundary: dict[str, list[list[float]]] = {}

    # -- input from the live feed --------------------------------------------------------------------
    def apply_location(self, ev: DriverLocation) -> None:
        self.counters.events_in += 1
        car = self.cars.get(ev.driver_id)
        status = STATUS_CODES.get(ev.status, 0)
        if car is None:
            car = Car(
                ev.driver_id,
                ev.lat,
                ev.lon,
                status,
                ev.ts,
                ev.seq,
                ev.heading,
                self._ride_of_driver.get(ev.driver_id),
                time.monotonic(),
                offered=ev.driver_id in self._offer_of_driver,
                new_ping=True,
            )
            self.cars[ev.driver_id] = car
        elif ev.seq <= car.seq and ev.ts <= car.ts:
            return  # duplicate or out of order: the car already shows something newer
        else:
            car.new_ping = car.new_ping or ev.ts > car.ts  # a higher seq with an older time is no newer ping
            car.lat, car.lon, car.status, car.ts, car.seq, car.heading = (
                ev.lat,
                ev.lon,
                status,
                ev.ts,
                ev.seq,
                ev.heading,
            )
            car.seen = time.monotonic()
            car.silent = False  # back with its next ping
        if ev.ts > self.counters.newest_ping_ts:
            self.counters.newest_ping_ts = ev.ts
        self._changed[ev.driver_id] = None

    def apply_ride_event(self, ev: object, raw: bytes) -> None:
        """A ride event: remember which car serves (or is offered) which ride, queue it for its viewers."""
        self.counters.events_in += 1
        driver_id: str | None = getattr(ev, "driver_id", None)
        ride_id: str = getattr(ev, "ride_id", "")
        if driver_id:
            if isinstance(ev, RideAssigned):
                self._ride_of_driver[driver_id] = ride_id
            elif (
                isinstance(ev, RideCompleted | RideCancelled | RideExpired)
                and self._ride_of_driver.get(driver_id) == ride_id
            ):
                self._ride_of_driver.pop(driver_id, None)
            self._follow_offer(ev, driver_id, ride_id)
            car = self.cars.get(driver_id)
            if car is not None:
                ride = self._ride_of_driver.get(driver_id)
                offered = driver_id in self._offer_of_driver
                if car.ride != ride or car.offered != offered:
                    car.ride, car.offered = ride, offered
                    self._changed[driver_id] = None
        rider_id: str | None = getattr(ev, "rider_id", None)
        for client in self.clients:
            if client.may_see(rider_id):
                if len(client.events) == RIDE_EVENT_QUEUE:
                    metrics.RIDE_EVENTS_DROPPED.inc()
                client.events.append(raw)

    def _follow_offer(self, ev: object, driver_id: str, ride_id: str) -> None:
        """An offer holds the car from ``RideOffered`` until it is answered, withdrawn or the ride moves on."""
        if isinstance(ev, RideOffered):
            self._offer_of_driver[driver_id] = ride_id
        elif self._offer_of_driver.get(driver_id) == ride_id and (
            isinstance(ev, RideOfferTimedOut | RideOfferAnswered | RideAssigned | RideCancelled | RideExpired)
        ):
            self._offer_of_driver.pop(driver_id, None)

    def surge_at(self, lat: float, lon: float) -> tuple[str, float]:
        """(H3 cell, multiplier) at a point, from the surge values the feed delivered (1.0 if none)."""
        cell = h3.latlng_to_cell(lat, lon, self.surge_resolution)
        return cell, float(self.surge.get(cell, 1.0))

    def surge_cell_problem(self, cell: str, resolution: int | None = None) -> str | None:
        """Why ``cell`` is not a surge cell this gateway prices with, or None: an H3 cell of the
        configured resolution whose centre lies in (or just around) the service area."""
        if resolution is not None and resolution != self.surge_resolution:
            return f"surge resolution {resolution} is not the configured {self.surge_resolution}"
        if not h3.is_valid_cell(cell):
            return "surge cell is not an H3 cell"
        if h3.get_resolution(cell) != self.surge_resolution:
            return f"surge cell has resolution {h3.get_resolution(cell)}, not {self.surge_resolution}"
        lat, lon = h3.cell_to_latlng(cell)
        if not SURGE_AREA.contains(lat, lon):
            return "surge cell outside the service area"
        return None

    def apply_surge(self, ev: SurgeChanged) -> bool:
        """A cell's surge multiplier changed: remember it, send it to every client next round.
        False (nothing changes) for a cell outside the contract (:meth:`surge_cell_problem`)."""
        self.counters.events_in += 1
        problem = self.surge_cell_problem(ev.cell, ev.resolution)
        if problem is not None:
            metrics.BAD_EVENTS.inc()
            log.debug("surge_event_ignored", cell=ev.cell[:16], reason=problem)
            return False
        self.surge[ev.cell] = ev.multiplier
        self._surge_pending[ev.cell] = ev.multiplier
        return True

    def surge_frame(self, cells: dict[str, float], boundaries: bool) -> bytes:
        """``{"t":"surge","res":R,"c":[[cell, multiplier, [[lat,lon],...] | null], ...]}``: a cell's
        polygon comes with the first frame a client gets for it (the browser has no H3)."""
        from ridehail.domain.surge import cell_boundary

        rows = []
        for cell, multiplier in cells.items():
            polygon = None
            if boundaries or cell not in self._surge_boundary:
                polygon = self._surge_boundary.get(cell)
                if polygon is None:
                    polygon = self._surge_boundary[cell] = cell_boundary(cell)
            rows.append([cell, multiplier, polygon])
        return orjson.dumps({"t": "surge", "res": self.surge_resolution, "c": rows})

    # -- clients --------------------------------------------------------------------------------------
    def add(self, client: Client) -> None:
        self.clients.add(client)
        metrics.CLIENTS.set(len(self.clients))
        if self.surge:  # every surge cell known so far, with its polygon (after the "hello")
            asyncio.get_running_loop().call_soon(self._send_surge_snapshot, client)

    def _send_surge_snapshot(self, client: Client) -> None:
        if client in self.clients and not client.closing:
            broadcast([client.conn], self.surge_frame(self.surge, boundaries=True), text=True)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        metrics.CLIENTS.set(len(self.clients))

    def cars_online(self) -> int:
        return sum(1 for c in self.cars.values() if c.shown_status != OFFLINE)

    def _mark_silent(self, now: float) -> None:
        """Cars not heard from for the presence TTL are shown offline (until their next ping)."""
        self._last_presence_check = now
        for car in self.cars.values():
            if not car.silent and now - car.seen > self.presence_ttl_s:
                car.silent = True
                self._changed[car.car_id] = None

    # -- frames ---------------------------------------------------------------------------------------
    def frame_round(self) -> None:
        """Encode what changed, then give every client that can take it one frame."""
        started = time.perf_counter()
        self.round += 1
        r = self.round
        now = time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        if now - self._last_presence_check > PRESENCE_CHECK_S:
            self._mark_silent(now)
        changed = [self.cars[i] for i in self._changed if i in self.cars]
        self._changed.clear()
        for car in changed:
            car.round = r
            car.frag = car.encode()
        # Ping -> write latency counts the cars a new ping changed: a car re-sent for a ride event or
        # for going silent carries the time of a ping that an earlier frame already delivered.
        pinged = [car for car in changed if car.new_ping]
        for car in pinged:
            car.new_ping = False
        if pinged:
            step = max(1, len(pinged) // E2E_SAMPLES_PER_ROUND)
            for car in pinged[::step]:
                lat_ms = max(0, now_ms - car.ts)
                metrics.E2E_LATENCY.observe(lat_ms / 1000)
                self.counters.write_latency_ms.append(lat_ms)

        shared: dict[BBox, bytes] = {}  # viewport -> whole frame, for up-to-date clients with no events
        groups: dict[bytes, list[ServerConnection]] = {}
        for client in list(self.clients):  # _behind() may remove a client
            if client.closing:
                continue
            if client.buffered() > self.write_limit:
                self._behind(client, now)
                continue
            client.behind_since = None
            cars_part: bytes
            if client.bbox is None:
                cars_part = b""
                client.last_round = r
            elif client.last_round == r - 1 and not client.events:
                frame = shared.get(client.bbox)
                if frame is None:
                    cars_part = b",".join(c.frag for c in changed if in_bbox(c, client.bbox))
                    frame = car_frame(r, now_ms, cars_part, b"") if cars_part else b""
                    shared[client.bbox] = frame
                client.last_round = r
                if frame:
                    groups.setdefault(frame, []).append(client.conn)
                continue
            elif client.last_round == r - 1:
                cars_part = b",".join(c.frag for c in changed if in_bbox(c, client.bbox))
            else:
                since, bbox = client.last_round, client.bbox
                cars_part = b",".join(c.frag for c in self.cars.values() if c.round > since and in_bbox(c, bbox))
            client.last_round = r
            events_part = b",".join(client.events)
            client.events.clear()
            if cars_part or events_part:
                groups.setdefault(car_frame(r, now_ms, cars_part, events_part), []).append(client.conn)

        for frame, conns in groups.items():
            broadcast(conns, frame, text=True)
            n = len(conns)
            self.counters.frames_out += n
            self.counters.bytes_out += n * len(frame)
            metrics.FRAMES_SENT.inc(n)
            metrics.FRAME_BYTES.inc(n * len(frame))
        if self._surge_pending:
            pending, self._surge_pending = self._surge_pending, {}  # a failing frame is not retried forever
            self.send_all(self.surge_frame(pending, boundaries=False))
        if now - self._last_prune > 5.0:
            self._prune(now)
        metrics.FRAME_ROUND_SECONDS.observe(time.perf_counter() - started)

    def send_all(self, message: bytes, clients: Iterable[Client] | None = None) -> None:
        """Send a small message (e.g. stats) to every client that is keeping up."""
        conns = [c.conn for c in (clients or self.clients) if not c.closing and c.buffered() <= self.write_limit]
        broadcast(conns, message, text=True)

    def _behind(self, client: Client, now: float) -> None:
        self.counters.collapsed += 1
        metrics.FRAMES_COLLAPSED.inc()
        if client.behind_since is None:
            client.behind_since = now
            log.info("ws_client_behind", client=client.conn.id.hex[:8], buffered=client.buffered())
        elif now - client.behind_since > self.slow_grace_s:
            client.closing = True
            self.remove(client)  # no more work or memory for it, even before the socket is gone
            self.counters.slow_closed += 1
            metrics.SLOW_CLIENTS_CLOSED.inc()
            log.warning("ws_client_too_slow_closed", client=client.conn.id.hex[:8], buffered=client.buffered())
            task = asyncio.get_running_loop().create_task(self._close_slow(client))
            self._closing_tasks.add(task)
            task.add_done_callback(self._closing_tasks.discard)

    async def _close_slow(self, client: Client) -> None:
        conn = client.conn
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(CLOSE_TOO_SLOW, "too slow: frames not read"), timeout=1.0)
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()  # a peer that never reads never acknowledges the close either

    def _prune(self, now: float) -> None:
        self._last_prune = now
        stale = [i for i, c in self.cars.items() if now - c.seen > self.car_ttl_s]
        for i in stale:
            del self.cars[i]
        # rides and offers of cars no longer on the map go too (forged events cannot grow them forever)
        self._offer_of_driver = {d: r for d, r in self._offer_of_driver.items() if d in self.cars}
        self._ride_of_driver = {d: r for d, r in self._ride_of_driver.items() if d in self.cars}
        metrics.CARS.set(len(self.cars))
