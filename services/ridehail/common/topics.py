"""The idempotent "ensure topics" step (the topics themselves are defined in
:mod:`ridehail.domain.topics`).

Topics are created explicitly at start-up: the embedded broker's auto-creation makes topics with
the wrong partition count, so every client disables it and ``ensure_topics`` runs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # exported at runtime, not in the stub

from ridehail.common.logging import get_logger
from ridehail.domain.topics import TopicSpec, all_topic_specs

log = get_logger(__name__)


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
