"""Fleet: devices, groups, state, telemetry, events, acks, alerts (controller/db/fleet_tables.py)

Revision ID: fleet_0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fleet_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("fleet",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "acks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("cmd", sa.String(length=64), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acks")),
        sa.UniqueConstraint("device_id", "cmd", "ts_ms", name="uq_acks_device_cmd_ts"),
    )
    with op.batch_alter_table("acks", schema=None) as batch_op:
        batch_op.create_index("ix_acks_cmd", ["cmd"], unique=False)

    op.create_table(
        "alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("raised_ms", sa.BigInteger(), nullable=False),
        sa.Column("cleared_ms", sa.BigInteger(), nullable=True),
        sa.Column("message_vi", sa.Text(), nullable=False),
        sa.Column("message_en", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("raise_delivery", sa.String(length=8), nullable=False),
        sa.Column("clear_delivery", sa.String(length=8), nullable=False),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
        sa.Column("delivery_claimed_ms", sa.BigInteger(), nullable=True),
        sa.Column("delivery_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_raised", ["raised_ms"], unique=False)
        batch_op.create_index(
            "uq_alerts_open",
            ["kind", "device_id"],
            unique=True,
            sqlite_where=sa.text("cleared_ms IS NULL"),
            postgresql_where=sa.text("cleared_ms IS NULL"),
        )

    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("device_id", "event_id", name="uq_events_device_event"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_device_ts", ["device_id", "ts_ms"], unique=False)
        batch_op.create_index("ix_events_type_ts", ["type", "ts_ms"], unique=False)

    op.create_table(
        "groups",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
    )
    op.create_table(
        "rollup_progress",
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("done_until_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("period_s", name=op.f("pk_rollup_progress")),
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
    op.create_table(
        "telemetry_samples",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("cpu_temp_c", sa.Float(), nullable=True),
        sa.Column("load1", sa.Float(), nullable=True),
        sa.Column("mem_used_pct", sa.Float(), nullable=True),
        sa.Column("disk_free_mb", sa.Float(), nullable=True),
        sa.Column("cpu_pct", sa.Float(), nullable=True),
        sa.Column("rss_mb", sa.Float(), nullable=True),
        sa.Column("outbox_len", sa.Float(), nullable=True),
        sa.Column("clock_offset_ms", sa.Float(), nullable=True),
        sa.Column("signal_dbm", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_samples")),
    )
    with op.batch_alter_table("telemetry_samples", schema=None) as batch_op:
        batch_op.create_index(
            "ix_telemetry_samples_device_received", ["device_id", "received_ms"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_telemetry_samples_received_ms"), ["received_ms"], unique=False
        )

    op.create_table(
        "device_groups",
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("group_id", sa.String(length=48), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_groups_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_device_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "group_id", name=op.f("pk_device_groups")),
    )
    with op.batch_alter_table("device_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_groups_group_id"), ["group_id"], unique=False)

    op.create_table(
        "device_state",
        sa.Column("device_id", sa.String(length=48), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=True),
        sa.Column("changed_ms", sa.BigInteger(), nullable=True),
        sa.Column("status_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("boot_ms", sa.BigInteger(), nullable=True),
        sa.Column("config_version", sa.BigInteger(), nullable=False),
        sa.Column("schedule_version", sa.BigInteger(), nullable=False),
        sa.Column("documents", sa.JSON(), nullable=False),
        sa.Column("telemetry_ms", sa.BigInteger(), nullable=True),
        sa.Column("cpu_temp_c", sa.Float(), nullable=True),
        sa.Column("disk_free_mb", sa.Float(), nullable=True),
        sa.Column("disk_free_pct", sa.Float(), nullable=True),
        sa.Column("clock_synced", sa.Boolean(), nullable=True),
        sa.Column("clock_offset_ms", sa.Float(), nullable=True),
        sa.Column("outbox_len", sa.Integer(), nullable=True),
        sa.Column("telemetry", sa.JSON(), nullable=True),
        sa.Column("printer", sa.JSON(), nullable=True),
        sa.Column("printer_ms", sa.BigInteger(), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_state_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_state")),
    )


def downgrade() -> None:
    op.drop_table("device_state")
    with op.batch_alter_table("device_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_groups_group_id"))

    op.drop_table("device_groups")
    with op.batch_alter_table("telemetry_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telemetry_samples_received_ms"))
        batch_op.drop_index("ix_telemetry_samples_device_received")

    op.drop_table("telemetry_samples")
    op.drop_table("telemetry_rollups")
    op.drop_table("rollup_progress")
    op.drop_table("groups")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_type_ts")
        batch_op.drop_index("ix_events_device_ts")

    op.drop_table("events")
    op.drop_table("devices")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_alerts_open",
            sqlite_where=sa.text("cleared_ms IS NULL"),
            postgresql_where=sa.text("cleared_ms IS NULL"),
        )
        batch_op.drop_index("ix_alerts_raised")

    op.drop_table("alerts")
    with op.batch_alter_table("acks", schema=None) as batch_op:
        batch_op.drop_index("ix_acks_cmd")

    op.drop_table("acks")
