"""Broadcast: broadcasts.commune, the commune a broadcast was made for

Revision ID: broadcast_0004_communes
Revises: broadcast_0003_times

NULL is the province: every broadcast sent before communes existed was the
whole site's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0004_communes"
down_revision: str | Sequence[str] | None = "broadcast_0003_times"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("commune", sa.String(length=48), nullable=True))
    op.create_index(op.f("ix_broadcasts_commune"), "broadcasts", ["commune"])


def downgrade() -> None:
    op.drop_index(op.f("ix_broadcasts_commune"), table_name="broadcasts")
    op.drop_column("broadcasts", "commune")
