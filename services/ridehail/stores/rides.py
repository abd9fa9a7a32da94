"""Postgres statements of the ``rides`` and ``ride_events`` tables (SQLAlchemy Core text, asyncpg
underneath). Every writer of ride rows goes through here: the gateway (request, rider cancel) and
matching (assignment, offers, lifecycle, expiry); the schema can change in one place.

Every write is idempotent: ride history rows are unique by ``event_id`` and every transition is
conditional on the ride's current status, so replaying a batch after a crash, or racing another
matching instance, changes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ridehail.common.outbox import add_outbox
from ridehail.domain.events import Event, LatLon, RideCompleted, RideOffered, RideRequested, event_type
from ridehail.domain.lifecycle import INITIAL_STATUS
from ridehail.domain.topics import RIDE_EVENT

_INSERT_RIDE_EVENT = text(
    "INSERT INTO ride_events (event_id, ride_id, type, ts, payload) "
    "VALUES (:event_id, :ride_id, :type, :ts, CAST(:payload AS jsonb)) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING id"
)


async def insert_ride_event(session: AsyncSession, event: Event) -> bool:
    """Append ``event`` to its ride's history; False if this event id was already recorded."""
    row = (
        await session.execute(
            _INSERT_RIDE_EVENT,
            {
                "event_id": event.event_id,
                "ride_id": event.ride_id,  # type: ignore[attr-defined]
                "type": event_type(type(event)),
                "ts": event.ts,
                "payload": msgspec.json.encode(event).decode(),
            },
        )
    ).first()
    return row is not None


async def publish(session: AsyncSession, event: Event) -> None:
    """Record a ride event in the ride's history and queue it for the ride event topic (outbox), in
    the caller's transaction: the event is published only if the transaction commits."""
    await insert_ride_event(session, event)
    await add_outbox(session, RIDE_EVENT.name, event.ride_id, event)  # type: ignore[attr-defined]


async def event_seen(session: AsyncSession, event_id: str) -> bool:
    row = (await session.execute(text("SELECT 1 FROM ride_events WHERE event_id = :e"), {"e": event_id})).first()
    return row is not None


async def ensure_ride(session: AsyncSession, event: RideRequested | RideOffered, *, replayed: bool = False) -> None:
    """Create the ride row if the gateway's database does not hold it yet (e.g. a replayed stream).
    A ride first seen in a replay is marked ``replayed``: its decisions come from the recording."""
    await session.execute(
        text(
            "INSERT INTO rides (ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, replayed) "
            "VALUES (:r, :u, 'requested', :plat, :plon, :dlat, :dlon, :replayed) ON CONFLICT (ride_id) DO NOTHING"
        ),
        {
            "replayed": replayed,
            "r": event.ride_id,
            "u": event.rider_id or "",
            "plat": event.pickup.lat,
            "plon": event.pickup.lon,
            "dlat": event.dropoff.lat,
            "dlon": event.dropoff.lon,
        },
    )


async def lock_ride(session: AsyncSession, ride_id: str) -> Any:
    return (
        (await session.execute(text("SELECT * FROM rides WHERE ride_id = :r FOR UPDATE"), {"r": ride_id}))
        .mappings()
        .first()
    )


async def set_ride_status(
    session: AsyncSession,
    ride_id: str,
    expected: Sequence[str],
    target: str,
    timestamp_column: str,
    *,
    driver_id: str | None = None,
    reason: str | None = None,
) -> bool:
    """Conditional transition: only moves a ride that is still in one of ``expected``."""
    assert timestamp_column.endswith("_at") and timestamp_column.isidentifier()
    sets = [f"status = :target, {timestamp_column} = clock_timestamp()"]  # when it happened, not txn start
    params: dict[str, Any] = {"r": ride_id, "expected": list(expected), "target": target}
    if driver_id is not None:
        sets.append("driver_id = :d")
        params["d"] = driver_id
    if reason is not None:
        sets.append("reason = :why")
        params["why"] = reason
    sql = f"UPDATE rides SET {', '.join(sets)} WHERE ride_id = :r AND status = ANY(:expected) RETURNING ride_id"
    return (await session.execute(text(sql), params)).first() is not None


async def lock_waiting_rides(session: AsyncSession, limit: int = 1000, ride_id: str | None = None) -> list[Any]:
    """Rides waiting for a driver (oldest first; only ``ride_id`` if given), locked for this
    transaction; rides another matching instance is working on are skipped, so instances share
    the waiting rides without working on the same one twice."""
    only = "AND ride_id = :r " if ride_id is not None else ""
    return list(
        (
            await session.execute(
                text(
                    "SELECT ride_id, rider_id, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, "
                    "(extract(epoch from requested_at) * 1000)::bigint AS requested_ms "
                    f"FROM rides WHERE status = 'requested' AND NOT replayed {only}ORDER BY requested_at "
                    "LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": limit, "r": ride_id},
            )
        )
        .mappings()
        .all()
    )


async def waiting_ride_ids(session: AsyncSession, limit: int = 1000) -> list[str]:
    """Ids of the rides waiting for a driver, oldest first (not locked)."""
    rows = await session.execute(
        text("SELECT ride_id FROM rides WHERE status = 'requested' AND NOT replayed ORDER BY requested_at LIMIT :n"),
        {"n": limit},
    )
    return [r.ride_id for r in rows]


async def count_waiting_rides(session: AsyncSession) -> int:
    return int(
        (
            await session.execute(text("SELECT count(*) FROM rides WHERE status = 'requested' AND NOT replayed"))
        ).scalar_one()
    )


async def cancel_stale_assignments(session: AsyncSession, older_than_s: float, reason: str) -> list[Any]:
    """Cancel rides still ``assigned`` ``older_than_s`` after assignment; returns (ride, rider, driver)."""
    return list(
        (
            await session.execute(
                text(
                    "UPDATE rides SET status = 'cancelled', cancelled_at = now(), reason = :why "
                    "WHERE status = 'assigned' AND assigned_at < now() - make_interval(secs => :s) "
                    "RETURNING ride_id, rider_id, driver_id"
                ),
                {"why": reason, "s": older_than_s},
            )
        )
        .mappings()
        .all()
    )


async def ride_surge_multiplier(session: AsyncSession, ride_id: str) -> float | None:
    """The multiplier the ride locked at request time (its quote's, or the pickup's surge then)."""
    row = (await session.execute(text("SELECT surge_multiplier FROM rides WHERE ride_id = :r"), {"r": ride_id})).first()
    return None if row is None or row.surge_multiplier is None else float(row.surge_multiplier)


async def store_fare(session: AsyncSession, event: RideCompleted, locked_multiplier: float | None) -> None:
    """Store the final fare of a completed ride: the simulator's (``event.fare``), else computed here
    from the driven distance and time with the shared tariff and the ride's locked multiplier."""
    from ridehail.common.tariff import current_tariff
    from ridehail.domain.fares import compute_fare

    multiplier = event.surge_multiplier or locked_multiplier or 1.0
    fare = compute_fare(current_tariff(), event.distance_m, event.duration_s, multiplier)
    breakdown = fare.breakdown()
    total = fare.total
    if event.fare is not None:
        total = Decimal(repr(event.fare)).quantize(Decimal("0.01"))
        breakdown["total"] = float(total)
        breakdown["computed_by"] = "simulator"
    await session.execute(
        text("UPDATE rides SET fare = :fare, fare_breakdown = CAST(:b AS jsonb) WHERE ride_id = :r"),
        {"fare": total, "b": json.dumps(breakdown), "r": event.ride_id},
    )


# -- the rider's side (gateway) ---------------------------------------------------------------------

ACTIVE_STATUSES = ("requested", "offered", "assigned", "arrived", "in_progress")


async def lock_rider(session: AsyncSession, rider_id: str) -> None:
    """Serialise the caller's transaction with every other one holding this rider's lock (released
    at commit or rollback): a check-then-insert under it cannot race another request of the rider."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('ridehail.rider:' || :u, 0))"), {"u": rider_id}
    )


async def active_ride_of(session: AsyncSession, rider_id: str) -> Any:
    """The rider's ride that has not ended yet (ride_id, status), if any; replayed rides do not count."""
    return (
        (
            await session.execute(
                text(
                    "SELECT ride_id, status FROM rides WHERE rider_id = :u AND status = ANY(:active) "
                    "AND NOT replayed ORDER BY requested_at DESC LIMIT 1"
                ),
                {"u": rider_id, "active": list(ACTIVE_STATUSES)},
            )
        )
        .mappings()
        .first()
    )


async def insert_ride(
    session: AsyncSession,
    ride_id: str,
    rider_id: str,
    pickup: LatLon,
    dropoff: LatLon,
    *,
    quote_id: str | None = None,
    surge_multiplier: float | None = None,
    quoted_price: Decimal | None = None,
) -> None:
    """A new ride in its initial status (the request's event goes with it: :func:`insert_ride_event`)."""
    await session.execute(
        text(
            "INSERT INTO rides (ride_id, rider_id, status, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, "
            "quote_id, surge_multiplier, quoted_price) "
            "VALUES (:r, :u, :s, :plat, :plon, :dlat, :dlon, :q, :m, :price)"
        ),
        {
            "r": ride_id,
            "u": rider_id,
            "s": INITIAL_STATUS,
            "plat": pickup.lat,
            "plon": pickup.lon,
            "dlat": dropoff.lat,
            "dlon": dropoff.lon,
            "q": quote_id,
            "m": surge_multiplier,
            "price": quoted_price,
        },
    )


async def load_ride(session: AsyncSession, ride_id: str, *, lock: bool = False) -> Any:
    sql = "SELECT * FROM rides WHERE ride_id = :r" + (" FOR UPDATE" if lock else "")
    return (await session.execute(text(sql), {"r": ride_id})).mappings().first()


async def ride_history(session: AsyncSession, ride_id: str) -> list[Any]:
    result = await session.execute(
        text("SELECT type, ts, event_id, recorded_at FROM ride_events WHERE ride_id = :r ORDER BY id"), {"r": ride_id}
    )
    return list(result.mappings().all())


async def mark_cancelled(
    session: AsyncSession,
    ride_id: str,
    *,
    reason: str,
    by: str,
    fee: Decimal,
    breakdown: dict[str, object],
) -> None:
    """The rider's (or an admin's) cancel, with the fee charged as the ride's fare when it is not 0."""
    await session.execute(
        text(
            "UPDATE rides SET status = 'cancelled', cancelled_at = clock_timestamp(), reason = :why, "
            "cancelled_by = :by, "
            "cancellation_fee = CAST(:fee AS numeric), "
            "fare = CASE WHEN :charged THEN CAST(:fee AS numeric) ELSE fare END, "
            "fare_breakdown = CASE WHEN :charged THEN CAST(:breakdown AS jsonb) ELSE fare_breakdown END "
            "WHERE ride_id = :r"
        ),
        {"why": reason, "by": by, "fee": fee, "charged": fee > 0, "breakdown": json.dumps(breakdown), "r": ride_id},
    )


async def set_cancelled_by(session: AsyncSession, ride_id: str, by: str) -> None:
    await session.execute(text("UPDATE rides SET cancelled_by = :by WHERE ride_id = :r"), {"by": by, "r": ride_id})


TRIP_COLUMNS = (
    "ride_id, rider_id, status, driver_id, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, requested_at, "
    "completed_at, cancelled_at, expired_at, reason, cancelled_by, quoted_price, surge_multiplier, fare, "
    "cancellation_fee"
)


async def trip_page(
    session: AsyncSession, rider_id: str | None, before: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    """Up to ``limit`` rides, newest first (keyset: strictly older than ``before``); one rider's or all."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if rider_id is not None:
        where.append("rider_id = :me")
        params["me"] = rider_id
    if before is not None:
        params["t"], params["after"] = before
        where.append("(requested_at, ride_id) < (:t, :after)")
    sql = f"SELECT {TRIP_COLUMNS} FROM rides"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY requested_at DESC, ride_id DESC LIMIT :limit"
    return list((await session.execute(text(sql), params)).mappings().all())
