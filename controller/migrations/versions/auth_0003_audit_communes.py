"""Auth: audit_log.commune, the commune of the user who acted

Revision ID: auth_0003_audit_communes
Revises: auth_0002_communes

Kept with the entry, so a commune admin reads its own commune's entries even
after a user moved or was removed; NULL is the province (or the system), as
every entry written before communes existed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0003_audit_communes"
down_revision: str | Sequence[str] | None = "auth_0002_communes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("commune", sa.String(length=48), nullable=True))
    op.create_index(op.f("ix_audit_log_commune"), "audit_log", ["commune"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_commune"), table_name="audit_log")
    op.drop_column("audit_log", "commune")
