"""Documents: the devices found behind on their signed documents (controller/radio/resends.py)

Revision ID: documents_0001
Revises:
Depends on: fleet_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "documents_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("documents",)
depends_on: str | Sequence[str] | None = "fleet_0001"


def upgrade() -> None:
    op.create_table(
        "behind_devices",
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
        sa.Column("resent_ms", sa.BigInteger(), nullable=True),
        sa.Column("resends", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_behind_devices_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_behind_devices")),
    )


def downgrade() -> None:
    op.drop_table("behind_devices")
