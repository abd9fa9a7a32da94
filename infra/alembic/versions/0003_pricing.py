"""pricing: quotes, current surge per H3 cell, price/fare columns on rides

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quotes",
        sa.Column("quote_id", sa.String(length=64), nullable=False),
        sa.Column("rider_id", sa.String(length=64), nullable=False),
        sa.Column("pickup_lat", sa.Double(), nullable=False),
        sa.Column("pickup_lon", sa.Double(), nullable=False),
        sa.Column("dropoff_lat", sa.Double(), nullable=False),
        sa.Column("dropoff_lon", sa.Double(), nullable=False),
        sa.Column("cell", sa.String(length=16), nullable=False),
        sa.Column("distance_m", sa.Double(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("surge_multiplier", sa.Double(), nullable=False),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("breakdown", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ride_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("quote_id", name=op.f("pk_quotes")),
        sa.UniqueConstraint("ride_id", name=op.f("uq_quotes_ride_id")),
    )
    op.create_index(op.f("ix_quotes_rider_id"), "quotes", ["rider_id"], unique=False)
    op.create_index(op.f("ix_quotes_expires_at"), "quotes", ["expires_at"], unique=False)
    op.create_table(
        "surge_cells",
        sa.Column("cell", sa.String(length=16), nullable=False),
        sa.Column("multiplier", sa.Double(), nullable=False),
        sa.Column("demand", sa.Integer(), nullable=False),
        sa.Column("supply", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("cell", name=op.f("pk_surge_cells")),
    )
    op.add_column("rides", sa.Column("quote_id", sa.String(length=64), nullable=True))
    op.add_column("rides", sa.Column("surge_multiplier", sa.Double(), nullable=True))
    op.add_column("rides", sa.Column("quoted_price", sa.Numeric(10, 2), nullable=True))
    op.add_column("rides", sa.Column("fare", sa.Numeric(10, 2), nullable=True))
    op.add_column("rides", sa.Column("fare_breakdown", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    for column in ("fare_breakdown", "fare", "quoted_price", "surge_multiplier", "quote_id"):
        op.drop_column("rides", column)
    op.drop_table("surge_cells")
    op.drop_index(op.f("ix_quotes_expires_at"), table_name="quotes")
    op.drop_index(op.f("ix_quotes_rider_id"), table_name="quotes")
    op.drop_table("quotes")
