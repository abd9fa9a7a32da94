"""Transactional outbox: a business row and its event are written in ONE transaction; a relay
publishes the event afterwards.

* :func:`add_outbox` inserts the outbox row in the caller's transaction (and a ``NOTIFY`` that
  Postgres delivers only on commit, so relays wake at once instead of waiting for their next poll).
* :class:`OutboxRelay` publishes unpublished rows in id order, waits for the broker's ack of every
  message, then marks them published. A crash between the ack and the mark republishes the rows:
  harmless, because every consumer is idempotent by ``event_id``. One relay at a time holds a
  Postgres advisory lock while it publishes, so the order of rows is the order on the topic even
  when several processes (gateway, matching) run relays on the same table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ridehail.common.kafka import EventProducer
from ridehail.common.logging import get_logger
from ridehail.domain.events import Event, encode

log = get_logger(__name__)

NOTIFY_CHANNEL = "ridehail_outbox"
RELAY_LOCK_ID = 0x52494445  # "RIDE": one publishing relay at a time keeps the table's order

OUTBOX_PUBLISHED = Counter("ridehail_outbox_published_total", "Outbox rows published", ["relay"])
OUTBOX_PENDING = Gauge("ridehail_outbox_pending", "Unpublished outbox rows seen by the last pass", ["relay"])

_INSERT = text(
    "INSERT INTO outbox (topic, key, payload, headers) VALUES (:topic, :key, :payload, CAST(:headers AS jsonb))"
)
_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")


async def add_outbox(
    session: AsyncSession,
    topic: str,
    key: str,
    event: Event,
    headers: dict[str, str] | None = None,
) -> None:
    """Queue ``event`` for ``topic`` in the caller's transaction; it is published after commit."""
    await add_outbox_many(session, [(topic, key, event)], headers)


async def add_outbox_many(
    session: AsyncSession,
    items: Sequence[tuple[str, str, Event]],
    headers: dict[str, str] | None = None,
) -> None:
    """Queue several events in one round trip (same transaction rules as :func:`add_outbox`)."""
    if not items:
        return
    hdrs = json.dumps(headers) if headers else None
    await session.execute(
        _INSERT,
        [{"topic": t, "key": k, "payload": encode(e), "headers": hdrs} for t, k, e in items],
    )
    await session.execute(_NOTIFY)


class OutboxRelay:
    """Publishes the outbox in order until ``stop`` is set. Safe to run in several processes."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        producer: EventProducer,
        *,
        name: str = "relay",
        batch_size: int = 500,
        poll_interval_s: float = 0.25,
    ) -> None:
        self._factory = session_factory
        self._producer = producer
        self.name = name
        self._batch = batch_size
        self._poll = poll_interval_s
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        """Ask for a pass now (in-process writers may call this after their commit)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        try:
            while not stop.is_set():
                self._wake.clear()  # a commit landing during this pass sets it again: no lost wake-up
                try:
                    n = await self.publish_once()
                except Exception as exc:  # database or broker away: retry, never die
                    log.warning("outbox_relay_failed", relay=self.name, error=repr(exc)[:300])
                    n = 0
                    await _sleep_or_stop(stop, 1.0)
                if n >= self._batch:
                    continue  # more waiting: no sleep
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def publish_once(self) -> int:
        """One pass: publish up to ``batch_size`` rows in order and mark them; returns the count."""
        async with self._factory() as session, session.begin():
            # Wait for any other relay's pass to finish: one publisher at a time keeps the order.
            await session.execute(text(f"SELECT pg_advisory_xact_lock({RELAY_LOCK_ID})"))
            rows = (
                await session.execute(
                    text(
                        "SELECT id, topic, key, payload, headers FROM outbox WHERE published_at IS NULL "
                        "ORDER BY id LIMIT :n"
                    ),
                    {"n": self._batch},
                )
            ).all()
            OUTBOX_PENDING.labels(self.name).set(len(rows))
            if not rows:
                return 0
            await self._publish(rows)
            await session.execute(
                text("UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY(:ids)"),
                {"ids": [r.id for r in rows]},
            )
        self.published += len(rows)
        OUTBOX_PUBLISHED.labels(self.name).inc(len(rows))
        return len(rows)

    async def _publish(self, rows: Sequence[Any]) -> None:
        sends = [
            self._producer.send(
                r.topic,
                bytes(r.payload),
                r.key,
                [(k, str(v).encode()) for k, v in (r.headers or {}).items()],
            )
            for r in rows
        ]
        results = await asyncio.gather(*sends, return_exceptions=True)
        failed = [res for res in results if isinstance(res, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(rows)} outbox messages not acknowledged: {failed[0]!r}")

    async def _listen(self) -> Any:
        """A dedicated asyncpg connection LISTENing for commits that added outbox rows."""
        engine: AsyncEngine | None = self._factory.kw.get("bind")
        if engine is None:
            return None
        try:
            import asyncpg

            url = engine.url.set(drivername="postgresql")
            conn = await asyncpg.connect(url.render_as_string(hide_password=False))
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            return conn
        except Exception as exc:
            log.warning("outbox_listen_unavailable", relay=self.name, error=repr(exc)[:200])
            return None


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
