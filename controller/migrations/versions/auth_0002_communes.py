"""Auth: users.commune, the commune (tenant) a user acts within

Revision ID: auth_0002_communes
Revises: auth_0001

NULL is the province: every user made before communes existed keeps seeing
everything, as a site of one commune did (docs/communes.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0002_communes"
down_revision: str | Sequence[str] | None = "auth_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("commune", sa.String(length=48), nullable=True))
    op.create_index(op.f("ix_users_commune"), "users", ["commune"])


def downgrade() -> None:
    op.drop_index(op.f("ix_users_commune"), table_name="users")
    op.drop_column("users", "commune")
