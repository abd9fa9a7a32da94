"""The gateway's one Kafka consumer: driver locations and ride events, from the latest offset.

Each gateway instance has its own consumer group (it must see every partition), starts at the end
of the topics (a live map has no use for history) and commits nothing. ``consume`` runs in an
executor thread; decoding and the hub update run on the event loop, so the hub needs no locks.
Undecodable messages, surge cells outside the contract and any message whose application raises
are counted and skipped (the gateway commits nothing and dead-letters nothing: matching does).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import msgspec
from confluent_kafka import Consumer, KafkaError, Message

from ridehail.common.failures import describe
from ridehail.common.kafka import consume_batch, consumer_config, message_headers
from ridehail.common.logging import get_logger
from ridehail.domain.events import (
    DriverLocation,
    EventDecoder,
    EventError,
    SurgeChanged,
)
from ridehail.domain.topics import DRIVER_LOCATION, PRICING_SURGE, REPLAY_HEADER, RIDE_EVENT
from ridehail.gateway import metrics
from ridehail.gateway.hub import Hub

log = get_logger(__name__)

REPLAY_AGE_MS = 30_000  # pings this much older than the wall clock mean a replayed stream


class LiveFeed:
    def __init__(self, bootstrap: str, hub: Hub, group_id: str | None = None, batch_max: int = 5000) -> None:
        self.hub = hub
        self.group_id = group_id or f"ridehail-gateway-{uuid.uuid4().hex[:12]}"
        self._batch_max = batch_max
        self._conf = consumer_config(
            bootstrap,
            self.group_id,
            "gateway-feed",
            stats_cb=self._on_stats,
            error_cb=self._on_error,
            **{
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "fetch.min.bytes": 1,
            },
        )
        self._locations = msgspec.json.Decoder(DriverLocation)
        self._rides = EventDecoder(*RIDE_EVENT.events)
        self._surge = EventDecoder(SurgeChanged)
        self.lag = 0
        self.assigned = False
        self.healthy = False
        self.replay_seen_at = 0.0
        self.bad = 0

    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
            lag = 0
            for topic in stats.get("topics", {}).values():
                for pid, part in topic.get("partitions", {}).items():
                    if pid != "-1" and part.get("consumer_lag", -1) >= 0:
                        lag += part["consumer_lag"]
            self.lag = lag
            metrics.FEED_LAG.set(lag)
        except (ValueError, KeyError, TypeError):
            pass

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
            self.healthy = False
            log.warning("feed_broker_error", error=err.str())

    def _on_assign(self, _: Consumer, partitions: list) -> None:  # type: ignore[type-arg]
        self.assigned = True
        log.info("feed_partitions_assigned", count=len(partitions))

    @property
    def mode(self) -> str:
        """``replay`` while replayed events arrive (header or old timestamps), else ``live``."""
        if time.monotonic() - self.replay_seen_at < 5.0:
            return "replay"
        newest = self.hub.counters.newest_ping_ts
        if newest and time.time() * 1000 - newest > REPLAY_AGE_MS and self.hub.cars:
            return "replay"
        return "live"

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        consumer = Consumer(self._conf)
        consumer.subscribe([DRIVER_LOCATION.name, RIDE_EVENT.name, PRICING_SURGE.name], on_assign=self._on_assign)
        log.info("feed_started", group=self.group_id)
        try:
            while not stop.is_set():
                # no fill wait: the frame loop coalesces (at most one round per frame interval)
                messages = await loop.run_in_executor(None, consume_batch, consumer, self._batch_max, 0.0)
                if messages:
                    self.healthy = True
                    self.handle(messages)
        finally:
            await loop.run_in_executor(None, consumer.close)
            log.info("feed_stopped")

    def handle(self, messages: list[Message]) -> None:
        n_loc = n_ride = 0
        for msg in messages:
            try:
                kind = self._handle_one(msg)
            except Exception as exc:  # whatever one message does, the feed goes on with the next
                self._bad(f"could not be applied: {describe(exc)}")
                continue
            if kind == 1:
                n_loc += 1
            elif kind == 2:
                n_ride += 1
        self.hub.woken.set()  # with frame_on_change, the frame loop sends it without waiting for a tick
        if n_loc:
            metrics.EVENTS_IN.labels("driver.location").inc(n_loc)
        if n_ride:
            metrics.EVENTS_IN.labels("ride").inc(n_ride)

    def _handle_one(self, msg: Message) -> int:
        """Apply one message to the hub: 1 a location, 2 a ride event, 0 anything else."""
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("feed_consume_error", error=error.str())
            return 0
        value = msg.value()
        if not value:
            self._bad("empty message")
            return 0
        if any(k == REPLAY_HEADER for k, _ in message_headers(msg)):
            self.replay_seen_at = time.monotonic()
        topic = msg.topic()
        if topic == DRIVER_LOCATION.name:
            try:
                self.hub.apply_location(self._locations.decode(value))
            except msgspec.DecodeError as exc:
                self._bad(str(exc))
                return 0
            return 1
        if topic == PRICING_SURGE.name:
            try:
                if not self.hub.apply_surge(self._surge.decode(value)):  # type: ignore[arg-type]
                    self._bad("surge cell outside the contract (resolution, H3 validity, service area)")
            except EventError as exc:
                self._bad(exc.reason)
            return 0
        try:
            ride_event = self._rides.decode(value)
        except EventError as exc:
            self._bad(exc.reason)
            return 0
        self.hub.apply_ride_event(ride_event, value)  # negotiation too: the map shows offered cars
        return 2

    def _bad(self, reason: str) -> None:
        self.bad += 1
        metrics.BAD_EVENTS.inc()
        if self.bad <= 10 or self.bad % 1000 == 0:
            log.warning("feed_bad_message", reason=reason[:200], total=self.bad)
