"""offers: rides and drivers can be 'offered', offer bookkeeping on rides, drivers that answer offers

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_RIDE = "('requested', 'assigned', 'arrived', 'in_progress', 'completed', 'cancelled', 'expired')"
NEW_RIDE = "('requested', 'offered', 'assigned', 'arrived', 'in_progress', 'completed', 'cancelled', 'expired')"
OLD_DRIVER = "('available', 'to_pickup', 'on_trip', 'offline')"
NEW_DRIVER = "('available', 'offered', 'to_pickup', 'on_trip', 'offline')"


def _replace_check(table: str, values: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_status"), table, type_="check")
    op.create_check_constraint(op.f(f"ck_{table}_status"), table, f"status IN {values}")


def upgrade() -> None:
    _replace_check("rides", NEW_RIDE)
    _replace_check("drivers", NEW_DRIVER)
    op.add_column("rides", sa.Column("offer_id", sa.String(length=64), nullable=True))
    op.add_column("rides", sa.Column("offered_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("rides", sa.Column("offer_attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("rides", sa.Column("cancelled_by", sa.String(length=16), nullable=True))
    op.add_column("rides", sa.Column("cancellation_fee", sa.Numeric(10, 2), nullable=True))
    op.add_column("rides", sa.Column("replayed", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("drivers", sa.Column("accepts_offers", sa.Boolean(), server_default="false", nullable=False))
    op.create_index("ix_rides_offered", "rides", ["offered_at"], postgresql_where=sa.text("status = 'offered'"))


def downgrade() -> None:
    op.drop_index("ix_rides_offered", table_name="rides")
    op.drop_column("drivers", "accepts_offers")
    for column in ("replayed", "cancellation_fee", "cancelled_by", "offer_attempts", "offered_at", "offer_id"):
        op.drop_column("rides", column)
    op.execute("UPDATE rides SET status = 'requested', driver_id = NULL WHERE status = 'offered'")
    op.execute("UPDATE drivers SET status = 'available', current_ride_id = NULL WHERE status = 'offered'")
    _replace_check("rides", OLD_RIDE)
    _replace_check("drivers", OLD_DRIVER)
