"""Fleet: plays, each play's records folded by ingest, so the play log pages in SQL

Revision ID: fleet_0009_plays
Revises: fleet_0008_webhook_communes

The play log folded a period's events in Python before it could order or
limit them: a province's one day was 80,000 events read for a page of rows.
Ingest now keeps one row per (device, key) in the events' transaction
(controller/fleet/play_writes.py); this revision folds the events already
stored, a device at a time (a province's year of plays takes minutes, once).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from controller.fleet.play_writes import backfill

revision: str = "fleet_0009_plays"
down_revision: str | Sequence[str] | None = "fleet_0008_webhook_communes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = sa.table(
    "events",
    sa.column("id", sa.BigInteger),
    sa.column("device_id", sa.String),
    sa.column("type", sa.String),
    sa.column("ts_ms", sa.BigInteger),
    sa.column("body", sa.JSON),
)


def upgrade() -> None:
    plays = op.create_table(
        "plays",
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("placed_ms", sa.BigInteger(), nullable=False),
        sa.Column("order_ms", sa.BigInteger(), nullable=False),
        sa.Column("first_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("planned_ms", sa.BigInteger(), nullable=True),
        sa.Column("actual_ms", sa.BigInteger(), nullable=True),
        sa.Column("played_ms", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("relayed_ms", sa.BigInteger(), nullable=True),
        sa.Column("gaps", sa.Integer(), nullable=False),
        sa.Column("gap_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "key"),
    )
    assert plays is not None
    backfill(op.get_bind(), EVENTS, plays)
    op.create_index("ix_plays_placed", "plays", ["placed_ms"])
    op.create_index("ix_plays_device_placed", "plays", ["device_id", "placed_ms"])


def downgrade() -> None:
    op.drop_index("ix_plays_device_placed", table_name="plays")
    op.drop_index("ix_plays_placed", table_name="plays")
    op.drop_table("plays")
