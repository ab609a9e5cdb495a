"""Fleet: devices.commune and groups.commune, mirrored from the site's registry

Revision ID: fleet_0007_communes
Revises: fleet_0006_receipts

NULL is the province (or a site without communes). The registry mirror
(controller/fleet/ingest_writes.py) fills them on its next pass, so nothing
is copied here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fleet_0007_communes"
down_revision: str | Sequence[str] | None = "fleet_0006_receipts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("devices", "groups"):
        op.add_column(table, sa.Column("commune", sa.String(length=48), nullable=True))
        op.create_index(op.f(f"ix_{table}_commune"), table, ["commune"])


def downgrade() -> None:
    for table in ("devices", "groups"):
        op.drop_index(op.f(f"ix_{table}_commune"), table_name=table)
        op.drop_column(table, "commune")
