"""Broadcast: a bulletin from above carries the commune it is for

Revision ID: broadcast_0007_bulletin_communes
Revises: broadcast_0006_reached

NULL is the province: every commune's, as the source-information system sends a
bulletin for the whole province. Bulletins received before communes existed
were the whole site's, so they stay the province's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0007_bulletin_communes"
down_revision: str | Sequence[str] | None = "broadcast_0006_reached"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bulletins", sa.Column("commune", sa.String(length=48), nullable=True))
    op.create_index(op.f("ix_bulletins_commune"), "bulletins", ["commune"])


def downgrade() -> None:
    op.drop_index(op.f("ix_bulletins_commune"), table_name="bulletins")
    op.drop_column("bulletins", "commune")
