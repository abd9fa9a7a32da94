"""Topic definitions (names, partitions, keys) and the idempotent "ensure topics" step.

Topics are created explicitly at start-up: the embedded broker's auto-creation makes topics with
the wrong partition count, so every client disables it and ``ensure_topics`` runs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ridehail.common.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    description: str

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


DRIVER_LOCATION = TopicSpec("ridehail.driver.location.v1", 12, "driver_id", "GPS pings from drivers, every ~1 s each")
RIDE_REQUEST = TopicSpec("ridehail.ride.request.v1", 6, "ride_id", "Ride requests from riders")
RIDE_EVENT = TopicSpec(
    "ridehail.ride.event.v1",
    6,
    "ride_id",
    "Ride lifecycle: assigned, arrived, picked_up, completed, cancelled, expired",
)
PRICING_SURGE = TopicSpec(
    "ridehail.pricing.surge.v1",
    3,
    "cell",
    "Surge multiplier changes per H3 cell (only when a cell's multiplier changes)",
)

# Header on every record put back by `ridehail replay`; the map says "replay" when it sees it.
REPLAY_HEADER = "ridehail-replay"

TOPICS: tuple[TopicSpec, ...] = (DRIVER_LOCATION, RIDE_REQUEST, RIDE_EVENT, PRICING_SURGE)


def all_topic_specs() -> list[TopicSpec]:
    """Every topic including its dead-letter topic (DLQs get one partition: order is not needed)."""
    specs: list[TopicSpec] = []
    for t in TOPICS:
        specs.append(t)
        specs.append(TopicSpec(t.dlq, 1, t.key, f"Dead letters of {t.name}"))
    return specs


def replication_for_cluster(brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor and topic config for a cluster of ``brokers``: 3 replicas with
    ``min.insync.replicas=2`` from three brokers on (a replicated Kafka), else one copy (tansu)."""
    if brokers >= 3:
        return 3, {"min.insync.replicas": "2"}
    return 1, {}


def ensure_topics(
    bootstrap: str, specs: list[TopicSpec] | None = None, timeout_s: float = 30.0, quiet: bool = False
) -> list[str]:
    """Create missing topics; return the names created. Safe to call any number of times."""
    specs = specs or all_topic_specs()
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000, "log_level": 2})
    deadline = time.monotonic() + timeout_s
    warned = False
    while True:
        try:
            existing = set(admin.list_topics(timeout=min(5.0, timeout_s)).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker at {bootstrap} unreachable: {exc}") from exc
            if not warned and not quiet:
                log.warning("broker_unreachable", bootstrap=bootstrap, retrying=True)
                warned = True
            time.sleep(1)
    missing = [s for s in specs if s.name not in existing]
    created: list[str] = []
    if missing:
        replicas, config = replication_for_cluster(len(admin.list_topics(timeout=min(5.0, timeout_s)).brokers))
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=s.partitions, replication_factor=replicas, config=config)
                for s in missing
            ],
            operation_timeout=timeout_s,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise
    # Wait until metadata shows every topic, so the first producer never races creation.
    while True:
        md = admin.list_topics(timeout=5).topics
        if all(s.name in md and not md[s.name].error for s in specs):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics not visible after {timeout_s}s: {[s.name for s in specs]}")
        time.sleep(0.1)
    if created:
        log.info("topics_created", topics=created)
    return created


async def wait_for_topics(bootstrap: str, stop: asyncio.Event | None = None) -> bool:
    """Ensure the topics, retrying with backoff for as long as the broker is unreachable.

    Logs one warning per outage, never raises for an unreachable broker; returns False if ``stop``
    was set before the broker answered.
    """
    delay, warned = 1.0, False
    while True:
        try:
            await asyncio.to_thread(ensure_topics, bootstrap, None, 8.0, True)
        except (RuntimeError, KafkaException) as exc:
            if not warned:
                log.warning("waiting_for_broker", bootstrap=bootstrap, error=str(exc)[:200])
                warned = True
        else:
            if warned:
                log.info("broker_reachable", bootstrap=bootstrap)
            return True
        if stop is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                return False
        else:
            await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
