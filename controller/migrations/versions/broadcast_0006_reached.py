"""Broadcast: broadcast_communes, the communes a broadcast reached

Revision ID: broadcast_0006_reached
Revises: broadcast_0005_communes

A province broadcast is seen, read-only, by every commune whose speakers it
reached, not only by the one it was made for. Broadcasts sent before have
none: a site of one commune has no communes to list.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0006_reached"
down_revision: str | Sequence[str] | None = "broadcast_0005_communes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broadcast_communes",
        sa.Column("broadcast_id", sa.String(length=64), nullable=False),
        sa.Column("commune", sa.String(length=48), nullable=False),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("broadcast_id", "commune"),
    )
    op.create_index(op.f("ix_broadcast_communes_commune"), "broadcast_communes", ["commune"])


def downgrade() -> None:
    op.drop_index(op.f("ix_broadcast_communes_commune"), table_name="broadcast_communes")
    op.drop_table("broadcast_communes")
