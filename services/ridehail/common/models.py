"""SQLAlchemy 2 models: the Postgres schema every service shares (migrated by Alembic)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ridehail.domain.grid import GRID_CELL_SQL

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DRIVER_STATUSES = ("available", "offered", "to_pickup", "on_trip", "offline")
RIDE_STATUSES = ("requested", "offered", "assigned", "arrived", "in_progress", "completed", "cancelled", "expired")
USER_ROLES = ("rider", "driver", "admin", "viewer")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", USER_ROLES), name="role"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    failed_logins: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class RefreshToken(Base):
    """One issued refresh token. Rotation links tokens into a family; reuse revokes the family."""

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    family_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    issued_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginCode(Base):
    """A one-time login code (stored as its SHA-256), exchanged once for a token pair."""

    __tablename__ = "login_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SigningKey(Base):
    """Asymmetric JWT signing keys; retired keys stay published until their tokens expire."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16), nullable=False)
    private_pem: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Driver(Base):
    """Latest known state of a driver; position writes are coalesced and ordered by ``last_seq``.
    ``last_seen_ms`` says whether it is present (:mod:`ridehail.domain.presence`); ``grid_cell``,
    computed by Postgres, finds free drivers near a point (:mod:`ridehail.domain.grid`)."""

    __tablename__ = "drivers"
    __table_args__ = (
        CheckConstraint(_in("status", DRIVER_STATUSES), name="status"),
        Index(
            "ix_drivers_free_cell",
            "grid_cell",
            postgresql_where="status = 'available' AND current_ride_id IS NULL",
        ),
        {"postgresql_with": {"fillfactor": 70}},  # room for HOT updates: a ping then touches no index
    )

    driver_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lat: Mapped[float] = mapped_column(Double, nullable=False)
    lon: Mapped[float] = mapped_column(Double, nullable=False)
    heading: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    speed: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_ts: Mapped[int] = mapped_column(BigInteger, nullable=False)
    current_ride_id: Mapped[str | None] = mapped_column(String(64))
    accepts_offers: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    last_seen_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    grid_cell: Mapped[int] = mapped_column(BigInteger, Computed(GRID_CELL_SQL, persisted=True))
    updated_at: Mapped[datetime] = _now()


class Ride(Base):
    __tablename__ = "rides"
    __table_args__ = (
        CheckConstraint(_in("status", RIDE_STATUSES), name="status"),
        Index("ix_rides_rider_requested", "rider_id", "requested_at"),
        Index("ix_rides_offered", "offered_at", postgresql_where="status = 'offered'"),
        Index("ix_rides_waiting", "requested_at", postgresql_where="status = 'requested'"),
    )

    ride_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rider_id: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    pickup_lat: Mapped[float] = mapped_column(Double, nullable=False)
    pickup_lon: Mapped[float] = mapped_column(Double, nullable=False)
    dropoff_lat: Mapped[float] = mapped_column(Double, nullable=False)
    dropoff_lon: Mapped[float] = mapped_column(Double, nullable=False)
    driver_id: Mapped[str | None] = mapped_column(String(64), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = _now()
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    arrived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    picked_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quote_id: Mapped[str | None] = mapped_column(String(64))
    surge_multiplier: Mapped[float | None] = mapped_column(Double)
    quoted_price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    fare: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    fare_breakdown: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    offer_id: Mapped[str | None] = mapped_column(String(64))
    offered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    offer_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cancelled_by: Mapped[str | None] = mapped_column(String(16))
    cancellation_fee: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    replayed: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")


class Quote(Base):
    """A price offered for a trip, valid until ``expires_at``; ``ride_id`` is set once it is used."""

    __tablename__ = "quotes"

    quote_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rider_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    pickup_lat: Mapped[float] = mapped_column(Double, nullable=False)
    pickup_lon: Mapped[float] = mapped_column(Double, nullable=False)
    dropoff_lat: Mapped[float] = mapped_column(Double, nullable=False)
    dropoff_lon: Mapped[float] = mapped_column(Double, nullable=False)
    cell: Mapped[str] = mapped_column(String(16), nullable=False)
    distance_m: Mapped[float] = mapped_column(Double, nullable=False)
    duration_s: Mapped[float] = mapped_column(Double, nullable=False)
    surge_multiplier: Mapped[float] = mapped_column(Double, nullable=False)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    breakdown: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    ride_id: Mapped[str | None] = mapped_column(String(64), unique=True)


class SurgeCell(Base):
    """The current surge multiplier of one H3 cell (written by pricing when it changes)."""

    __tablename__ = "surge_cells"

    cell: Mapped[str] = mapped_column(String(16), primary_key=True)
    multiplier: Mapped[float] = mapped_column(Double, nullable=False)
    demand: Mapped[int] = mapped_column(Integer, nullable=False)
    supply: Mapped[int] = mapped_column(Integer, nullable=False)
    ts: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = _now()


class RideEventRow(Base):
    """Append-only history of every ride transition (one row per applied event)."""

    __tablename__ = "ride_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    ride_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    ts: Mapped[int] = mapped_column(BigInteger, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    recorded_at: Mapped[datetime] = _now()


class ProcessedEvent(Base):
    """Idempotency ledger: an event id recorded here in the same transaction as its effect."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = _now()


class OutboxEntry(Base):
    """Transactional outbox: written with the business row, published to Kafka by a relay."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "id", postgresql_where="published_at IS NULL"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255), nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
