"""Fleet: the queue to the province's source-information system

Revision ID: fleet_0005_upward
Revises: fleet_0004_sightings

Status pings and play logs owed upward (controller/fleet/upward.py), sent in
order through outages, and the producer's cursors.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fleet_0005_upward"
down_revision: str | Sequence[str] | None = "fleet_0004_sightings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "upward_records",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("dedupe", sa.String(200), nullable=False, unique=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("done_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_upward_records_due", "upward_records", ["status", "id"])
    op.create_table(
        "upward_cursors",
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upward_cursors")
    op.drop_index("ix_upward_records_due", table_name="upward_records")
    op.drop_table("upward_records")
