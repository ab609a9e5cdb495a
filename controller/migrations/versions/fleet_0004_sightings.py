"""Fleet: device_state.sightings, the latest online statuses for duplicate identity

Revision ID: fleet_0004_sightings
Revises: fleet_0003_storage

Each agent run says which it is (its random instance) and where it connects
from when it comes online; controller/fleet/identity_rules.py reads them to
tell a cloned SD card from a restart. Nullable: an older row has none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fleet_0004_sightings"
down_revision: str | Sequence[str] | None = "fleet_0003_storage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("device_state", sa.Column("sightings", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("device_state", "sightings")
