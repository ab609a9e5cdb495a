"""Broadcast: clips, relay stations and schedule entries carry a commune

Revision ID: broadcast_0005_communes
Revises: broadcast_0004_communes

NULL is the province: every clip, station and entry made before communes
existed was the whole site's, so it stays every commune's to use (clips and
stations) and the province's to change. ``clip_shares`` is a second commune's
library entry for audio already stored (the store is content-addressed).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0005_communes"
down_revision: str | Sequence[str] | None = "broadcast_0004_communes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("clips", "relay_stations", "schedules")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("commune", sa.String(length=48), nullable=True))
        op.create_index(op.f(f"ix_{table}_commune"), table, ["commune"])
    op.create_table(
        "clip_shares",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("commune", sa.String(length=48), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["clips.sha256"],
            name=op.f("fk_clip_shares_sha256_clips"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sha256", "commune", name=op.f("pk_clip_shares")),
    )
    op.create_index(op.f("ix_clip_shares_commune"), "clip_shares", ["commune"])


def downgrade() -> None:
    op.drop_index(op.f("ix_clip_shares_commune"), table_name="clip_shares")
    op.drop_table("clip_shares")
    for table in reversed(TABLES):
        op.drop_index(op.f(f"ix_{table}_commune"), table_name=table)
        op.drop_column(table, "commune")
