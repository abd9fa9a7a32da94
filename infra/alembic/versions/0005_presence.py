"""presence and the shared candidate source: drivers.last_seen_ms, drivers.grid_cell (computed by
Postgres) with an index of free drivers per cell, room for HOT updates of drivers, an index of
waiting rides

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# ridehail.domain.grid.GRID_CELL_SQL at the time of this migration (a test compares the column
# Postgres computes with the Python formula).
GRID_CELL = (
    "(floor((lat + 90.0::float8) / 0.01::float8)::bigint * 100000 "
    "+ floor((lon + 180.0::float8) / 0.02::float8)::bigint)"
)


def upgrade() -> None:
    # Rows from before this revision count as never seen (0): silent until their next ping.
    op.add_column("drivers", sa.Column("last_seen_ms", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("drivers", sa.Column("grid_cell", sa.BigInteger(), sa.Computed(GRID_CELL, persisted=True)))
    op.create_index(
        "ix_drivers_free_cell",
        "drivers",
        ["grid_cell"],
        postgresql_where=sa.text("status = 'available' AND current_ride_id IS NULL"),
    )
    op.create_index("ix_rides_waiting", "rides", ["requested_at"], postgresql_where=sa.text("status = 'requested'"))
    # Room in every page for the next version of its rows: a ping that changes no indexed column
    # (the cell changes only at a cell border) is then a HOT update, which touches no index.
    op.execute("ALTER TABLE drivers SET (fillfactor = 70)")


def downgrade() -> None:
    op.execute("ALTER TABLE drivers RESET (fillfactor)")
    op.drop_index("ix_rides_waiting", table_name="rides")
    op.drop_index("ix_drivers_free_cell", table_name="drivers")
    op.drop_column("drivers", "grid_cell")
    op.drop_column("drivers", "last_seen_ms")
