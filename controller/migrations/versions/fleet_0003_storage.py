"""Fleet: roll-ups as one wide row per device and bucket; one index on raw samples

Revision ID: fleet_0003_storage
Revises: fleet_0002

A row per metric per bucket, with its key again in a separate index, made the
roll-ups nine-tenths of the database (about 40 MiB a device over the
retention). Existing roll-ups are moved into the wide rows, their values as
integers of 1/scale (controller/db/fleet_tables.py, ROLLUP_SCALE). Nothing
reads raw samples by device, so that index goes. The file itself shrinks at
the VACUUM that `controller.db.engine.upgrade` runs once after this.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fleet_0003_storage"
down_revision: str | Sequence[str] | None = "fleet_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# as in controller/db/fleet_tables.py when this was written: a migration keeps its own copy
SCALE = {
    "cpu_temp_c": 10,
    "load1": 100,
    "mem_used_pct": 10,
    "disk_free_mb": 10,
    "cpu_pct": 10,
    "rss_mb": 10,
    "outbox_len": 1,
    "clock_offset_ms": 10,
    "signal_dbm": 1,
}
STATS = ("min", "avg", "max")
SAMPLES_INDEX = "ix_telemetry_samples_device_received"


def _rename_table(old: str, new: str, old_pk: str, new_pk: str) -> None:
    op.rename_table(old, new)
    if op.get_bind().dialect.name == "postgresql":  # its key's index is named schema-wide
        op.execute(f'ALTER TABLE {new} RENAME CONSTRAINT "{old_pk}" TO "{new_pk}"')


def upgrade() -> None:
    _rename_table(
        "telemetry_rollups", "telemetry_rollups_narrow", "pk_telemetry_rollups", "pk_rollups_narrow"
    )
    op.create_table(
        "telemetry_rollups",
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        *(sa.Column(f"{m}_{s}", sa.BigInteger(), nullable=True) for m in SCALE for s in STATS),
        sa.PrimaryKeyConstraint(
            "device_id", "period_s", "bucket_ms", name=op.f("pk_telemetry_rollups")
        ),
        sqlite_with_rowid=False,
    )
    columns = ", ".join(f"{m}_{s}" for m in SCALE for s in STATS)
    values = ", ".join(
        f"CAST(ROUND(MAX(CASE WHEN metric = '{m}' THEN \"{s}\" END) * {scale}) AS BIGINT)"
        for m, scale in SCALE.items()
        for s in STATS
    )
    op.execute(
        f"INSERT INTO telemetry_rollups (device_id, period_s, bucket_ms, samples, {columns})"  # noqa: S608 - constants
        f' SELECT device_id, period_s, bucket_ms, MAX("count"), {values}'
        " FROM telemetry_rollups_narrow GROUP BY device_id, period_s, bucket_ms"
    )
    op.drop_table("telemetry_rollups_narrow")
    op.drop_index(SAMPLES_INDEX, table_name="telemetry_samples")


def downgrade() -> None:
    op.create_index(SAMPLES_INDEX, "telemetry_samples", ["device_id", "received_ms"])
    _rename_table(
        "telemetry_rollups", "telemetry_rollups_wide", "pk_telemetry_rollups", "pk_rollups_wide"
    )
    op.create_table(
        "telemetry_rollups",
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("avg", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_id", "metric", "period_s", "bucket_ms", name=op.f("pk_telemetry_rollups")
        ),
    )
    for m, scale in SCALE.items():
        op.execute(
            'INSERT INTO telemetry_rollups (device_id, metric, period_s, bucket_ms, "count",'  # noqa: S608 - constants
            ' "min", "avg", "max") SELECT device_id, '
            f"'{m}', period_s, bucket_ms, samples, {m}_min * 1.0 / {scale},"
            f" {m}_avg * 1.0 / {scale}, {m}_max * 1.0 / {scale}"
            f" FROM telemetry_rollups_wide WHERE {m}_avg IS NOT NULL"
        )
    op.drop_table("telemetry_rollups_wide")
