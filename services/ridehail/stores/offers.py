"""Postgres statements of driver offers: every move is conditional on the ride's current offer.

A ride under offer is ``offered`` with ``driver_id`` (the held driver, whose row is ``offered``
with ``current_ride_id`` = the ride) and ``offer_id`` (the ``RideOffered`` event id). An answer or
a timeout only applies while ``offer_id`` still names that offer, so a late or duplicate answer,
a second matching instance or a rider's cancel racing it change nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def offer_ride(session: AsyncSession, ride_id: str, driver_id: str, offer_id: str) -> tuple[int, int] | None:
    """``requested`` -> ``offered`` to ``driver_id``; returns (attempt number, ``offered_at`` in
    epoch ms rounded up, so a deadline computed from it is never before the true one), None if
    the ride moved on."""
    row = (
        await session.execute(
            text(
                "UPDATE rides SET status = 'offered', driver_id = :d, offer_id = :o, offered_at = clock_timestamp(), "
                "offer_attempts = offer_attempts + 1 "
                "WHERE ride_id = :r AND status = 'requested' "
                "RETURNING offer_attempts, ceil(extract(epoch from offered_at) * 1000)::bigint AS offered_ms"
            ),
            {"r": ride_id, "d": driver_id, "o": offer_id},
        )
    ).first()
    return (int(row.offer_attempts), int(row.offered_ms)) if row is not None else None


async def accept_offer(session: AsyncSession, ride_id: str, driver_id: str, offer_id: str) -> Any:
    """``offered`` -> ``assigned`` if ``offer_id`` is still the ride's open offer to ``driver_id``."""
    return (
        (
            await session.execute(
                text(
                    "UPDATE rides SET status = 'assigned', assigned_at = clock_timestamp(), offer_id = NULL "
                    "WHERE ride_id = :r AND status = 'offered' AND offer_id = :o AND driver_id = :d "
                    "RETURNING ride_id, rider_id, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, offer_attempts, "
                    "(extract(epoch from offered_at) * 1000)::bigint AS offered_ms"
                ),
                {"r": ride_id, "d": driver_id, "o": offer_id},
            )
        )
        .mappings()
        .first()
    )


async def withdraw_offer(session: AsyncSession, ride_id: str, offer_id: str) -> Any:
    """``offered`` -> ``requested`` (declined or timed out) if ``offer_id`` is still open; returns the ride."""
    return (
        (
            await session.execute(
                text(
                    "UPDATE rides SET status = 'requested', driver_id = NULL, offer_id = NULL "
                    "WHERE ride_id = :r AND status = 'offered' AND offer_id = :o "
                    "RETURNING ride_id, rider_id, pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, offer_attempts, "
                    "replayed, (extract(epoch from requested_at) * 1000)::bigint AS requested_ms, "
                    "(extract(epoch from offered_at) * 1000)::bigint AS offered_ms"
                ),
                {"r": ride_id, "o": offer_id},
            )
        )
        .mappings()
        .first()
    )


async def offers_to_withdraw(
    session: AsyncSession, timeout_s: float, now_ms: int, seen_since_ms: int, limit: int = 500
) -> list[Any]:
    """Open offers to withdraw now: made ``timeout_s`` or more before ``now_ms`` (``timed_out``),
    or to a driver not seen since ``seen_since_ms`` (silent). Locked; rows another instance is
    handling are skipped."""
    return list(
        (
            await session.execute(
                text(
                    "SELECT r.ride_id, r.driver_id, r.offer_id, r.offer_attempts, "
                    "(extract(epoch from r.offered_at) * 1000 + :t * 1000 <= :now) AS timed_out "
                    "FROM rides r LEFT JOIN drivers d ON d.driver_id = r.driver_id "
                    "WHERE r.status = 'offered' AND NOT r.replayed "
                    "AND (extract(epoch from r.offered_at) * 1000 + :t * 1000 <= :now "
                    "     OR coalesce(d.last_seen_ms, 0) < :seen) "
                    "ORDER BY r.offered_at LIMIT :n FOR UPDATE OF r SKIP LOCKED"
                ),
                {"t": timeout_s, "now": now_ms, "seen": seen_since_ms, "n": limit},
            )
        )
        .mappings()
        .all()
    )


async def offered_drivers(session: AsyncSession, ride_ids: Sequence[str]) -> dict[str, set[str]]:
    """Drivers each ride was already offered to (they are not asked again)."""
    if not ride_ids:
        return {}
    rows = (
        await session.execute(
            text(
                "SELECT ride_id, payload->>'driver_id' AS driver_id FROM ride_events "
                "WHERE type = 'ride.offered' AND ride_id = ANY(:ids)"
            ),
            {"ids": list(ride_ids)},
        )
    ).all()
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r.ride_id, set()).add(r.driver_id)
    return out


async def hold_for_recorded_decision(
    session: AsyncSession,
    ride_id: str,
    driver_id: str | None,
    status: str,
    timestamp_column: str | None,
    near: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Replay: put a replayed ride where the recording says, releasing a driver it held before."""
    previous = (
        await session.execute(text("SELECT driver_id FROM rides WHERE ride_id = :r FOR UPDATE"), {"r": ride_id})
    ).first()
    if previous is not None and previous.driver_id and previous.driver_id != driver_id:
        await session.execute(
            text(
                "UPDATE drivers SET status = 'available', current_ride_id = NULL, updated_at = now() "
                "WHERE driver_id = :d AND current_ride_id = :r"
            ),
            {"d": previous.driver_id, "r": ride_id},
        )
    sets = "status = :s, driver_id = :d"
    if timestamp_column is not None:
        assert timestamp_column.endswith("_at") and timestamp_column.isidentifier()
        sets += f", {timestamp_column} = clock_timestamp()"
    await session.execute(
        text(f"UPDATE rides SET {sets} WHERE ride_id = :r"), {"s": status, "d": driver_id, "r": ride_id}
    )
    if driver_id is not None:
        driver_status = {"offered": "offered", "assigned": "to_pickup"}[status]
        # The recorded claim: the driver is the ride's, whatever a fresh index would have chosen. At
        # replay speed the decision can overtake the driver's first ping: the row is then created
        # with seq 0 at ``near`` and the first ping moves it (the newest seq wins, the hold stays).
        lat, lon = near
        await session.execute(
            text(
                "INSERT INTO drivers (driver_id, lat, lon, status, last_seq, last_ts, current_ride_id) "
                "VALUES (:d, :lat, :lon, :s, 0, 0, :r) "
                "ON CONFLICT (driver_id) DO UPDATE SET status = :s, current_ride_id = :r, updated_at = now() "
                "WHERE drivers.current_ride_id IS NULL OR drivers.current_ride_id = :r"
            ),
            {"d": driver_id, "r": ride_id, "s": driver_status, "lat": lat, "lon": lon},
        )
