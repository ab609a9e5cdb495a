"""Fleet: one telemetry sample per (device, ts), so a redelivered one is stored once

Revision ID: fleet_0006_receipts
Revises: fleet_0005_upward

Ingest inserts samples with ON CONFLICT (device_id, ts_ms) DO NOTHING
(docs/delivery.md). The copies stored before are deleted first, keeping the
first row of each sample.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "fleet_0006_receipts"
down_revision: str | Sequence[str] | None = "fleet_0005_upward"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ux_telemetry_samples_sample"


def upgrade() -> None:
    op.execute(
        "DELETE FROM telemetry_samples WHERE id NOT IN"
        " (SELECT MIN(id) FROM telemetry_samples GROUP BY device_id, ts_ms)"
    )
    op.create_index(INDEX, "telemetry_samples", ["device_id", "ts_ms"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="telemetry_samples")
