"""Wires the fleet engine to Kafka: the ping loop (producer) and the ride-event consumer.

The fleet engine itself (``fleet.py``) knows nothing about Kafka or wall clocks; this module
steps it on the event loop's clock, produces its pings (``ridehail.driver.location.v1``, key
driver_id) and lifecycle events (``ridehail.ride.event.v1``, key ride_id), and applies the
assignments and cancellations it consumes. Bad assignments become dead-letter records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from ridehail.common.batch_consumer import BatchConsumer, Decoded, Rejected
from ridehail.common.failures import describe, is_infrastructure_failure
from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.domain.events import (
    DriverLocation,
    EventDecoder,
    RideAssigned,
    RideCancelled,
    RideOffered,
    RideOfferTimedOut,
    encode,
    now_ms,
)
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT
from ridehail.simulator.drivers import AssignmentRejected, FleetConfig
from ridehail.simulator.fleet import Fleet

log = get_logger(__name__)

PINGS = Counter("ridehail_simulator_pings_total", "Location pings produced")
LIFECYCLE = Counter("ridehail_simulator_ride_events_total", "Ride lifecycle events produced", ["type"])
ASSIGNMENTS = Counter("ridehail_simulator_assignments_total", "Assignments consumed", ["outcome"])
DRIVERS = Gauge("ridehail_simulator_drivers", "Simulated drivers by status", ["status"])
TICK_LAG = Gauge("ridehail_simulator_tick_lag_seconds", "How far the ping loop runs behind its schedule")

STALE_ASSIGNMENT_MARGIN_MS = 5_000
# The whole ride event topic; the drivers' own answers are read past, not dead-lettered.
RIDE_EVENT_TYPES = RIDE_EVENT.events
OFFERS = Counter("ridehail_simulator_offers_total", "Ride offers received", ["outcome"])


@dataclass(slots=True)
class LoopStats:
    steps: int = 0
    pings: int = 0
    events: int = 0
    max_lag_s: float = 0.0


class FleetRunner:
    """Steps a :class:`Fleet` in real time and produces what it emits."""

    def __init__(
        self,
        fleet: Fleet,
        producer: EventProducer,
        time_scale: float = 1.0,
        ping_sink: Callable[[DriverLocation], None] | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.fleet = fleet
        self.producer = producer
        self.ping_sink = ping_sink  # None: pings go to the broker with the lifecycle events
        self.time_scale = time_scale  # fleet seconds per wall second (demos and tests speed up)
        self.stats = LoopStats()
        self._clock_origin = time.monotonic()

    def now(self) -> float:
        """Fleet time: seconds since the runner was created (monotonic), times ``time_scale``."""
        return (time.monotonic() - self._clock_origin) * self.time_scale

    def flush_step(self, now: float) -> None:
        out = self.fleet.step(now)
        produce = self.producer.produce
        loc = DRIVER_LOCATION.name
        if self.ping_sink is not None:
            for p in out.pings:
                self.ping_sink(p)
        else:
            for p in out.pings:
                produce(loc, encode(p), p.driver_id)
        for e in out.events:
            produce(RIDE_EVENT.name, encode(e), e.ride_id)  # type: ignore[attr-defined]
            LIFECYCLE.labels(e.__struct_config__.tag).inc()
            log.info("ride_event", type=e.__struct_config__.tag, ride_id=e.ride_id, driver_id=e.driver_id)  # type: ignore[attr-defined]
        self.stats.steps += 1
        self.stats.pings += len(out.pings)
        self.stats.events += len(out.events)
        PINGS.inc(len(out.pings))

    def emit(self, event: RideCancelled) -> None:
        """A ride event decided outside the step (a driver refusing an assignment it cannot serve)."""
        self.producer.produce(RIDE_EVENT.name, encode(event), event.ride_id)
        LIFECYCLE.labels(event.__struct_config__.tag).inc()
        log.info("ride_event", type=event.__struct_config__.tag, ride_id=event.ride_id, driver_id=event.driver_id)

    async def run(self, stop: asyncio.Event) -> None:
        tick = self.fleet.tick_s
        next_at = self.now()
        while not stop.is_set():
            now = self.now()
            lag = (now - next_at) / self.time_scale
            if lag > self.fleet.config.interval:
                log.warning("ping_loop_behind", lag_s=round(lag, 2))
                next_at = now  # drop the backlog instead of bursting
            self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
            TICK_LAG.set(max(0.0, lag))
            self.flush_step(now)
            if self.stats.steps % self.fleet.config.slots == 0:
                for status, n in self.fleet.status_counts().items():
                    DRIVERS.labels(status).set(n)
            next_at += tick
            delay = (next_at - self.now()) / self.time_scale
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)


class RideEventHandler:
    """BatchConsumer handler: applies assignments and cancellations to the fleet."""

    def __init__(self, fleet: Fleet, clock: FleetRunner) -> None:
        self.fleet = fleet
        self.clock = clock
        self.accepted = 0
        self.rejected = 0
        # Assignments made before this process started belong to an earlier fleet: skip them.
        self.started_ms = now_ms() - STALE_ASSIGNMENT_MARGIN_MS

    async def __call__(self, batch: list[Decoded]) -> list[Rejected]:
        rejected: list[Rejected] = []
        now = self.clock.now()
        for item in batch:
            try:
                self._apply(item, now, rejected)
            except Exception as exc:
                if is_infrastructure_failure(exc):
                    raise  # e.g. the producer's queue is full: retry the batch, lose nothing
                rejected.append(Rejected(item.message, f"could not be applied: {describe(exc)}"))
        return rejected

    def _apply(self, item: Decoded, now: float, rejected: list[Rejected]) -> None:
        event = item.event
        if isinstance(event, RideAssigned):
            if not self.fleet.owns(event.driver_id):
                ASSIGNMENTS.labels("other_fleet").inc()
                return
            if event.ts < self.started_ms:
                ASSIGNMENTS.labels("stale").inc()
                log.info("stale_assignment_ignored", ride_id=event.ride_id, driver_id=event.driver_id)
                # No ride may stay assigned to a driver that will never drive it.
                self._refuse(event, "assignment predates the driver's session (simulator restarted)")
                return
            try:
                if self.fleet.assign(
                    event.driver_id,
                    event.ride_id,
                    event.pickup,
                    event.dropoff,
                    now,
                    rider_id=event.rider_id,
                    surge_multiplier=event.surge_multiplier,
                ):
                    self.accepted += 1
                    ASSIGNMENTS.labels("accepted").inc()
                    log.info("ride_assigned", ride_id=event.ride_id, driver_id=event.driver_id)
                else:
                    ASSIGNMENTS.labels("duplicate").inc()
            except AssignmentRejected as exc:
                self.rejected += 1
                ASSIGNMENTS.labels("rejected").inc()
                log.warning("assignment_rejected", ride_id=event.ride_id, driver_id=event.driver_id, reason=exc.reason)
                rejected.append(Rejected(item.message, exc.reason))
                self._refuse(event, exc.reason)
        elif isinstance(event, RideOffered):
            self._on_offer(event, now)
        elif isinstance(event, RideOfferTimedOut):
            if self.fleet.withdraw_offer(event.ride_id):
                OFFERS.labels("timed_out").inc()
        elif isinstance(event, RideCancelled):
            freed = self.fleet.cancel(event.ride_id, now)
            if freed is not None:
                log.info("ride_cancelled", ride_id=event.ride_id, driver_id=freed.driver_id, by=event.by)

    def _on_offer(self, event: RideOffered, now: float) -> None:
        if not self.fleet.owns(event.driver_id):
            return
        if event.ts < self.started_ms:
            OFFERS.labels("stale").inc()  # matching times it out and offers the next driver
            return
        try:
            fresh = self.fleet.offer(event.driver_id, event.ride_id, event.event_id, now)
        except AssignmentRejected as exc:
            OFFERS.labels("unknown_driver").inc()
            log.warning("offer_for_unknown_driver", ride_id=event.ride_id, driver_id=event.driver_id, reason=exc.reason)
            return
        OFFERS.labels("received" if fresh else "duplicate").inc()

    def _refuse(self, event: RideAssigned, reason: str) -> None:
        self.clock.emit(
            RideCancelled(
                ride_id=event.ride_id, rider_id=event.rider_id, by="driver", reason=reason, driver_id=event.driver_id
            )
        )


def make_consumer(
    bootstrap: str,
    fleet: Fleet,
    runner: FleetRunner,
    dlq_producer: EventProducer,
    group_id: str,
    fetch_wait_ms: int = 10,
) -> tuple[BatchConsumer, RideEventHandler]:
    handler = RideEventHandler(fleet, runner)
    consumer = BatchConsumer(
        bootstrap=bootstrap,
        group_id=group_id,
        topics=[RIDE_EVENT.name],
        decoder=EventDecoder(*RIDE_EVENT_TYPES),
        handler=handler,
        dlq_producer=dlq_producer,
        name="simulator-rides",
        batch_max=500,
        batch_timeout_ms=100,
        **{"fetch.wait.max.ms": fetch_wait_ms},
    )
    return consumer, handler


def fleet_config_from(settings: object, **overrides: object) -> FleetConfig:
    """FleetConfig from SimulatorSettings (plus overrides); seq starts at the wall clock in ms so
    a restarted simulator never reuses a driver's earlier sequence numbers."""
    s = settings
    values: dict[str, object] = {
        "drivers": s.drivers,  # type: ignore[attr-defined]
        "interval": s.interval,  # type: ignore[attr-defined]
        "slots": s.ping_slots,  # type: ignore[attr-defined]
        "seed": s.seed,  # type: ignore[attr-defined]
        "prefix": s.driver_prefix,  # type: ignore[attr-defined]
        "gps_noise_m": s.gps_noise_m,  # type: ignore[attr-defined]
        "pickup_wait_s": s.pickup_wait_s,  # type: ignore[attr-defined]
        "mean_online_min": s.mean_online_min,  # type: ignore[attr-defined]
        "mean_offline_min": s.mean_offline_min,  # type: ignore[attr-defined]
        "max_snap_m": s.max_snap_m,  # type: ignore[attr-defined]
        "answers_offers": s.driver_answers_offers,  # type: ignore[attr-defined]
        "accept_probability": s.offer_accept_probability,  # type: ignore[attr-defined]
        "answer_delay_max_s": s.offer_answer_max_s,  # type: ignore[attr-defined]
        "cancel_probability": s.driver_cancel_probability,  # type: ignore[attr-defined]
        "seq_start": time.time_ns() // 1_000_000,
    }
    values.update(overrides)
    return FleetConfig(**values)  # type: ignore[arg-type]
