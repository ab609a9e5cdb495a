"""Broadcasting: approval before air, and the commune's settings

Revision ID: broadcast_0003_approval
Revises: broadcast_0003_stations

A commune may require a leader's approval before what a broadcaster prepares
airs (`approval_required`, in `commune_settings`, off until set). A schedule
entry carries its approval; existing entries are approved, so nothing that
plays today stops. `approvals` lists what waits, and emergencies to review.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0003_approval"
down_revision: str | Sequence[str] | None = "broadcast_0003_stations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "schedules",
        sa.Column("approval", sa.String(16), server_default="approved", nullable=False),
    )
    op.create_table(
        "commune_settings",
        sa.Column("commune", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(140), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("commune", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column(
            "schedule_id",
            sa.Integer(),
            sa.ForeignKey("schedules.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column(
            "broadcast_id",
            sa.String(64),
            sa.ForeignKey("broadcasts.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("prepared_by", sa.String(140), nullable=False),
        sa.Column("prepared_ms", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(140), nullable=True),
        sa.Column("decided_ms", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
    )
    op.create_index("ix_approvals_state", "approvals", ["state"])
    op.create_index("ix_approvals_schedule_id", "approvals", ["schedule_id"])


def downgrade() -> None:
    op.drop_index("ix_approvals_schedule_id", "approvals")
    op.drop_index("ix_approvals_state", "approvals")
    op.drop_table("approvals")
    op.drop_table("commune_settings")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("approval")
