"""Broadcast: bulletins pulled from the province, and the times a schedule from above proposes

Revision ID: broadcast_0008_downward
Revises: broadcast_0007_bulletin_communes

The poller (controller/radio/downward.py) keeps what it could not take in
``downward_bulletins``; a bulletin that is a schedule from above keeps its
proposed times in ``bulletins.proposed``. Bulletins received before propose none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0008_downward"
down_revision: str | Sequence[str] | None = "broadcast_0007_bulletin_communes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bulletins", sa.Column("proposed", sa.JSON(), nullable=True))
    op.create_table(
        "downward_bulletins",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(length=160), nullable=False, unique=True),
        sa.Column("commune", sa.String(length=48), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("item", sa.JSON(), nullable=True),
    )
    op.create_index(op.f("ix_downward_bulletins_commune"), "downward_bulletins", ["commune"])
    op.create_index(op.f("ix_downward_bulletins_updated_ms"), "downward_bulletins", ["updated_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_downward_bulletins_updated_ms"), table_name="downward_bulletins")
    op.drop_index(op.f("ix_downward_bulletins_commune"), table_name="downward_bulletins")
    op.drop_table("downward_bulletins")
    op.drop_column("bulletins", "proposed")
