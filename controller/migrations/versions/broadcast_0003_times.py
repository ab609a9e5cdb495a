"""Schedules: an entry with several times of day and several targets

Revision ID: broadcast_0003_times
Revises: broadcast_0003_approval

"Weekdays at 06:30 and 17:00 for thôn 1 and thôn 2" is one entry: ``times``
holds its local times of day (one wire item each) and ``more_targets`` its
targets beyond the first, which stays in target_kind/target_id. Existing
entries get neither, so they stay one item for one target under the same ids.
Downgrading keeps each entry's first target and its first time of day.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0003_times"
down_revision: str | Sequence[str] | None = "broadcast_0003_approval"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEDULES = sa.table(
    "schedules",
    sa.column("id", sa.Integer),
    sa.column("dtstart", sa.String),
    sa.column("times", sa.JSON),
)


def upgrade() -> None:
    op.add_column("schedules", sa.Column("times", sa.JSON(), server_default="[]", nullable=False))
    op.add_column(
        "schedules", sa.Column("more_targets", sa.JSON(), server_default="[]", nullable=False)
    )


def downgrade() -> None:
    conn = op.get_bind()
    moved = []
    for row_id, dtstart, times in conn.execute(
        sa.select(SCHEDULES.c.id, SCHEDULES.c.dtstart, SCHEDULES.c.times)
    ):
        listed = json.loads(times) if isinstance(times, str) else times
        if listed:
            moved.append({"s_id": row_id, "s_dtstart": f"{dtstart[:10]}T{min(listed)}:00"})
    if moved:
        conn.execute(
            SCHEDULES.update()
            .where(SCHEDULES.c.id == sa.bindparam("s_id"))
            .values(dtstart=sa.bindparam("s_dtstart")),
            moved,
        )
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("more_targets")
        batch.drop_column("times")
