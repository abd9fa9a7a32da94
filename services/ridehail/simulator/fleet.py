"""The fleet engine: N drivers on the road graph, stepped by a clock the caller controls.

``Fleet.step(now)`` moves the drivers whose turn it is (one of ``slots`` groups per ping
interval, so 10,000 drivers at 1 Hz are spread over the second instead of arriving in one burst)
and returns their pings plus any ride lifecycle events. Time is a plain float in seconds: the
service passes the event loop's clock, tests pass a simulated one and step it without sleeping.

Driver life: ``available`` drivers cruise to random destinations 1-4 minutes away; an assignment
re-routes the driver (it finishes the road stretch it is on, then follows the fastest path) to the
pickup (``to_pickup``); there it emits ``RideArrived``, waits ``pickup_wait_s``, emits
``RidePickedUp``, drives to the drop-off (``on_trip``), emits ``RideCompleted`` with the distance
and duration of the trip, and becomes ``available`` again. Idle drivers go ``offline`` and come back
at random (exponential durations), unless churn is disabled.
"""

from __future__ import annotations

import math
import random
import secrets
from collections import deque

import numpy as np

from ridehail.common.logging import get_logger
from ridehail.common.tariff import current_tariff
from ridehail.domain.events import (
    LatLon,
    RideArrived,
    RideCancelled,
    RideCompleted,
    RidePickedUp,
    now_ms,
)
from ridehail.domain.fares import compute_fare
from ridehail.domain.roads import RoadGraph, RoutingError
from ridehail.simulator.drivers import (
    AssignmentRejected,
    Driver,
    FleetConfig,
    RideJob,
    Status,
    StepOutput,
    gps_ping,
)
from ridehail.simulator.legs import (
    Cursor,
    advance,
    build_leg,
    distance_at,
    remainder_to_next_node,
    stationary_leg,
)
from ridehail.simulator.offer_desk import OfferDesk

log = get_logger(__name__)

# Drivers routed by one Dijkstra call: its two result matrices hold a row per driver and a column
# per road node, so the chunk bounds the simulator's memory peak (256 rows made its RSS ~20 MB
# larger at 1,000 drivers: docs/bench/ping-slots/s1000-*.json).
ROUTE_CHUNK = 128


class Fleet:
    def __init__(self, graph: RoadGraph, config: FleetConfig, start_time: float = 0.0) -> None:
        self.graph = graph
        self.config = config
        seed = config.seed if config.seed is not None else secrets.randbits(63)
        self.seed = seed
        self._np_rng = np.random.default_rng(seed)
        self._rng = random.Random(seed)
        self._run_id = f"{seed & 0xFFFFFFFF:08x}{secrets.token_hex(2)}"
        self._slot = 0
        self._route_queue: deque[int] = deque()
        width = max(5, len(str(config.drivers)))
        self.drivers: list[Driver] = []
        self._by_id: dict[str, Driver] = {}
        self._rides: dict[str, Driver] = {}
        starts = self._np_rng.integers(graph.n, size=config.drivers)
        for i in range(config.drivers):
            node = int(starts[i])
            d = Driver(
                index=i,
                driver_id=f"{config.prefix}{i + 1:0{width}d}",
                status=Status.AVAILABLE,
                leg=stationary_leg(graph, node),
                cursor=Cursor(),
                last_t=start_time,
                seq=config.seq_start,
                next_churn_at=start_time + self._online_duration(),
            )
            self.drivers.append(d)
            self._by_id[d.driver_id] = d
            self._route_queue.append(i)
        self.pings_emitted = 0
        self.events_emitted = 0
        self.offers = OfferDesk(self._rng, config, self._run_id)  # the offers this fleet will answer

    # -- public API ------------------------------------------------------------------------------
    @property
    def tick_s(self) -> float:
        """Seconds between two ``step`` calls so every driver pings once per interval."""
        return self.config.interval / self.config.slots

    def driver(self, driver_id: str) -> Driver | None:
        return self._by_id.get(driver_id)

    def status_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Status}
        for d in self.drivers:
            counts[d.status.value] += 1
        return counts

    def owns(self, driver_id: str) -> bool:
        """Whether ``driver_id`` has this fleet's prefix (another fleet's assignments are ignored)."""
        return driver_id.startswith(self.config.prefix)

    def step(self, now: float, ts_ms: int | None = None) -> StepOutput:
        """Move the drivers of the current slot to ``now``; return their pings and ride events."""
        out = StepOutput()
        ts = now_ms() if ts_ms is None else ts_ms
        out.events.extend(self.offers.answers_due(now, ts))
        self._route_pending(now)
        slots = self.config.slots
        slot = self._slot
        self._slot = (slot + 1) % slots
        for d in self.drivers[slot::slots]:
            self._update(d, now, ts, out)
        self.pings_emitted += len(out.pings)
        self.events_emitted += len(out.events)
        return out

    def assign(
        self,
        driver_id: str,
        ride_id: str,
        pickup: LatLon,
        dropoff: LatLon,
        now: float,
        rider_id: str | None = None,
        surge_multiplier: float | None = None,
    ) -> bool:
        """Send a driver to a pickup. Returns False for a duplicate of the driver's current ride
        (redelivery); raises :class:`AssignmentRejected` for unknown or busy drivers and for
        points off the road network."""
        d = self._by_id.get(driver_id)
        if d is None:
            raise AssignmentRejected(f"unknown driver {driver_id!r} (fleet has {len(self.drivers)} drivers)")
        if d.ride is not None:
            if d.ride.ride_id == ride_id:
                return False
            raise AssignmentRejected(f"driver {driver_id} is busy with ride {d.ride.ride_id} ({d.status.value})")
        pickup_node = self._snap(pickup, "pickup")
        dropoff_node = self._snap(dropoff, "dropoff")
        self._catch_up(d, now)
        try:
            self._reroute(d, pickup_node)
        except RoutingError as exc:
            raise AssignmentRejected(f"pickup unreachable for {driver_id}: {exc}") from None
        d.ride = RideJob(
            ride_id, rider_id, pickup_node, dropoff_node, assigned_at=now, surge_multiplier=surge_multiplier or 1.0
        )
        self.offers.withdraw(ride_id)
        if self.config.cancel_probability > 0 and self._rng.random() < self.config.cancel_probability:
            lo, hi = self.config.cancel_after_s
            d.ride.cancel_at = now + self._rng.uniform(lo, hi)
        if d.status is Status.OFFLINE:
            d.announced_offline = False
        d.status = Status.TO_PICKUP
        d.needs_route = False
        self._rides[ride_id] = d
        return True

    def offer(self, driver_id: str, ride_id: str, offer_id: str, now: float) -> bool:
        """A ride offered to one of this fleet's drivers (see :meth:`OfferDesk.offer`); raises for an
        unknown driver."""
        d = self._by_id.get(driver_id)
        if d is None:
            raise AssignmentRejected(f"unknown driver {driver_id!r} (fleet has {len(self.drivers)} drivers)")
        return self.offers.offer(d, ride_id, offer_id, now)

    def withdraw_offer(self, ride_id: str) -> bool:
        """The offer timed out or the ride was cancelled: no answer will be sent."""
        return self.offers.withdraw(ride_id)

    def cancel(self, ride_id: str, now: float) -> Driver | None:
        """Free the driver of a cancelled ride (None if no driver of this fleet has it)."""
        self.offers.withdraw(ride_id)
        d = self._rides.pop(ride_id, None)
        if d is None or d.ride is None or d.ride.ride_id != ride_id:
            return None
        self._catch_up(d, now)
        d.ride = None
        d.status = Status.AVAILABLE
        self._request_cruise(d)
        return d

    # -- internals -------------------------------------------------------------------------------
    def _online_duration(self) -> float:
        mean = self.config.mean_online_min
        return math.inf if mean <= 0 else self._rng.expovariate(1.0 / (mean * 60.0))

    def _offline_duration(self) -> float:
        return self._rng.expovariate(1.0 / (self.config.mean_offline_min * 60.0))

    def _snap(self, point: LatLon, what: str) -> int:
        node, dist = self.graph.nearest_node_with_distance(point.lat, point.lon)
        if dist > self.config.max_snap_m:
            raise AssignmentRejected(
                f"{what} ({point.lat:.5f}, {point.lon:.5f}) is {dist:.0f} m from the road network "
                f"(limit {self.config.max_snap_m:.0f} m): unreachable"
            )
        return node

    def _factors(self, n_edges: int) -> np.ndarray:
        return self._np_rng.uniform(self.config.speed_factor_min, 1.0, n_edges)

    def _catch_up(self, d: Driver, now: float) -> None:
        """Move a driver to ``now`` without emitting a ping (before re-routing it)."""
        dt = now - d.last_t
        ride = d.ride
        waiting = ride is not None and ride.waiting_until is not None and ride.picked_up_at is None
        if dt > 0 and d.status is not Status.OFFLINE and not waiting:
            before = distance_at(d.leg, d.cursor)
            advance(d.leg, d.cursor, dt)
            d.odometer_m += distance_at(d.leg, d.cursor) - before
        d.last_t = max(d.last_t, now)

    def _reroute(self, d: Driver, target: int) -> None:
        node, prefix = remainder_to_next_node(d.leg, d.cursor)
        route = self.graph.route(node, target)
        d.leg = build_leg(self.graph, route, self._factors(len(route.edges)), prefix)
        d.cursor = Cursor()

    def _request_cruise(self, d: Driver) -> None:
        if not d.needs_route:
            d.needs_route = True
            self._route_queue.append(d.index)

    def _route_pending(self, now: float) -> None:
        """Give queued idle drivers a random destination, at most ``routes_per_s`` a second of fleet
        time, with one bounded Dijkstra call per :data:`ROUTE_CHUNK` drivers."""
        if not self._route_queue:
            return
        batch: list[Driver] = []
        limit = max(1, math.ceil(round(self.config.routes_per_s * self.tick_s, 6)))  # 1280 x 0.1 s: 128, not 129
        while self._route_queue and len(batch) < limit:
            d = self.drivers[self._route_queue.popleft()]
            if d.needs_route and d.status is Status.AVAILABLE:
                batch.append(d)
            elif d.needs_route and d.status is Status.OFFLINE:
                d.needs_route = False  # routed again when it comes back online
        for start in range(0, len(batch), ROUTE_CHUNK):
            self._route(batch[start : start + ROUTE_CHUNK])

    def _route(self, batch: list[Driver]) -> None:
        anchors = [remainder_to_next_node(d.leg, d.cursor) for d in batch]
        sources = [a[0] for a in anchors]
        lo, hi = self.config.cruise_min_s, self.config.cruise_max_s
        times, preds = self.graph.routes_within(sources, hi)
        for row, (d, (node, prefix)) in enumerate(zip(batch, anchors, strict=True)):
            dist = times[row]
            candidates = np.flatnonzero((dist >= lo) & np.isfinite(dist))
            if len(candidates) == 0:
                candidates = np.flatnonzero(np.isfinite(dist) & (dist > 0))
            if len(candidates) == 0:  # cannot happen on a strongly connected graph
                target = self.graph.random_node(self._np_rng)
                route = self.graph.route(node, target)
            else:
                target = int(candidates[self._np_rng.integers(len(candidates))])
                route = self.graph.path_to(preds[row], node, target)
            d.leg = build_leg(self.graph, route, self._factors(len(route.edges)), prefix)
            d.cursor = Cursor()
            d.needs_route = False

    def _update(self, d: Driver, now: float, ts: int, out: StepOutput) -> None:
        dt = now - d.last_t
        d.last_t = now
        if d.status is Status.OFFLINE:
            if now < d.next_churn_at:
                if d.announced_offline:
                    return
                d.announced_offline = True
                self._ping(d, ts, out, moving=False)
                return
            d.status = Status.AVAILABLE
            d.announced_offline = False
            d.next_churn_at = now + self._online_duration()
            self._request_cruise(d)
            self._ping(d, ts, out, moving=False)
            return

        ride = d.ride
        if ride is not None and ride.cancel_at is not None and now >= ride.cancel_at and ride.waiting_until is None:
            self._driver_cancels(d, ride, now, ts, out, "driver cancelled on the way to the pickup")
            self._ping(d, ts, out, moving=False)
            return
        if ride is not None and ride.waiting_until is not None and ride.picked_up_at is None:
            if now >= ride.waiting_until:
                self._pick_up(d, ride, now, ts, out)
            self._ping(d, ts, out, moving=False)
            return

        before = distance_at(d.leg, d.cursor)
        arrived = advance(d.leg, d.cursor, dt) if dt > 0 else d.cursor.seg >= len(d.leg.cum_t) - 1
        d.odometer_m += distance_at(d.leg, d.cursor) - before
        if arrived:
            if ride is None:
                if d.status is Status.AVAILABLE and now >= d.next_churn_at:
                    d.status = Status.OFFLINE
                    d.next_churn_at = now + self._offline_duration()
                    d.announced_offline = True
                    self._ping(d, ts, out, moving=False)
                    return
                self._request_cruise(d)
            elif d.status is Status.TO_PICKUP:
                ride.waiting_until = now + self.config.pickup_wait_s
                out.events.append(
                    RideArrived(
                        event_id=self._event_id(d, "arr"),
                        ts=ts,
                        ride_id=ride.ride_id,
                        rider_id=ride.rider_id,
                        driver_id=d.driver_id,
                    )
                )
                if self.config.pickup_wait_s <= 0:
                    self._pick_up(d, ride, now, ts, out)
            elif d.status is Status.ON_TRIP:
                self._complete(d, ride, now, ts, out)
        self._ping(d, ts, out, moving=not arrived)

    def _pick_up(self, d: Driver, ride: RideJob, now: float, ts: int, out: StepOutput) -> None:
        ride.picked_up_at = now
        ride.odometer_at_pickup = d.odometer_m
        out.events.append(
            RidePickedUp(
                event_id=self._event_id(d, "pck"),
                ts=ts,
                ride_id=ride.ride_id,
                rider_id=ride.rider_id,
                driver_id=d.driver_id,
            )
        )
        d.status = Status.ON_TRIP
        route = self.graph.route(d.leg.end_node, ride.dropoff_node)
        d.leg = build_leg(self.graph, route, self._factors(len(route.edges)))
        d.cursor = Cursor()

    def _complete(self, d: Driver, ride: RideJob, now: float, ts: int, out: StepOutput) -> None:
        started = ride.picked_up_at if ride.picked_up_at is not None else now
        distance_m = round(max(0.0, d.odometer_m - ride.odometer_at_pickup), 1)
        duration_s = round(max(0.0, now - started), 1)
        fare = compute_fare(current_tariff(), distance_m, duration_s, ride.surge_multiplier)
        out.events.append(
            RideCompleted(
                event_id=self._event_id(d, "cmp"),
                ts=ts,
                ride_id=ride.ride_id,
                rider_id=ride.rider_id,
                driver_id=d.driver_id,
                distance_m=distance_m,
                duration_s=duration_s,
                fare=float(fare.total),
                surge_multiplier=ride.surge_multiplier,
            )
        )
        self._rides.pop(ride.ride_id, None)
        d.ride = None
        d.status = Status.AVAILABLE
        self._request_cruise(d)

    def _driver_cancels(self, d: Driver, ride: RideJob, now: float, ts: int, out: StepOutput, reason: str) -> None:
        out.events.append(
            RideCancelled(
                event_id=self._event_id(d, "cnl"),
                ts=ts,
                ride_id=ride.ride_id,
                rider_id=ride.rider_id,
                by="driver",
                reason=reason,
                driver_id=d.driver_id,
            )
        )
        self._rides.pop(ride.ride_id, None)
        d.ride = None
        d.status = Status.AVAILABLE
        self._request_cruise(d)

    def _event_id(self, d: Driver, kind: str) -> str:
        return f"{self._run_id}-{d.index}-{kind}-{d.seq}"

    def _ping(self, d: Driver, ts: int, out: StepOutput, moving: bool) -> None:
        out.pings.append(gps_ping(d, ts, moving, self.config, self._rng, self._run_id))
