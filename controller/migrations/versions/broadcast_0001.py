"""Broadcasting: clips, schedules, published documents, broadcasts, bulletins

Revision ID: broadcast_0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("broadcast",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clips",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("lang", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_clips")),
    )
    op.create_table(
        "published_documents",
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("doc_type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signed_ms", sa.BigInteger(), nullable=False),
        sa.Column("delivered_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_published_documents")),
    )
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("clip_sha256", sa.String(length=64), nullable=True),
        sa.Column("stream_url", sa.String(length=2048), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["clip_sha256"],
            ["clips.sha256"],
            name=op.f("fk_broadcasts_clip_sha256_clips"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_index(op.f("ix_broadcasts_created_ms"), "broadcasts", ["created_ms"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(length=48), nullable=False),
        sa.Column("target_kind", sa.String(length=8), nullable=False),
        sa.Column("target_id", sa.String(length=48), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("rrule", sa.String(length=1000), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("dtstart", sa.String(length=32), nullable=False),
        sa.Column("until", sa.String(length=32), nullable=True),
        sa.Column("exdates", sa.JSON(), nullable=False),
        sa.Column("clip_sha256", sa.String(length=64), nullable=True),
        sa.Column("stream_url", sa.String(length=2048), nullable=True),
        sa.Column("stream_duration_s", sa.Integer(), nullable=True),
        sa.Column("gain_db", sa.Float(), nullable=False),
        sa.Column("lang", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clip_sha256"],
            ["clips.sha256"],
            name=op.f("fk_schedules_clip_sha256_clips"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint(
            "target_kind", "target_id", "item_id", name=op.f("uq_schedules_target_kind")
        ),
    )
    op.create_index(op.f("ix_schedules_clip_sha256"), "schedules", ["clip_sha256"])
    op.create_index(op.f("ix_schedules_target_id"), "schedules", ["target_id"])
    op.create_index(op.f("ix_schedules_target_kind"), "schedules", ["target_kind"])
    op.create_table(
        "broadcast_acks",
        sa.Column("broadcast_id", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=48), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("acked_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_broadcast_acks_broadcast_id_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("broadcast_id", "device", name=op.f("pk_broadcast_acks")),
    )
    op.create_table(
        "bulletins",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("clip_sha256", sa.String(length=64), nullable=True),
        sa.Column("stream_url", sa.String(length=2048), nullable=True),
        sa.Column("stream_duration_s", sa.Integer(), nullable=True),
        sa.Column("lang", sa.String(length=16), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_ms", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.Column("broadcast_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_bulletins_broadcast_id_broadcasts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["clip_sha256"],
            ["clips.sha256"],
            name=op.f("fk_bulletins_clip_sha256_clips"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_bulletins_schedule_id_schedules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulletins")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_bulletins_source")),
    )
    op.create_index(op.f("ix_bulletins_received_ms"), "bulletins", ["received_ms"])
    op.create_index(op.f("ix_bulletins_state"), "bulletins", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_bulletins_state"), table_name="bulletins")
    op.drop_index(op.f("ix_bulletins_received_ms"), table_name="bulletins")
    op.drop_table("bulletins")
    op.drop_table("broadcast_acks")
    op.drop_index(op.f("ix_schedules_target_kind"), table_name="schedules")
    op.drop_index(op.f("ix_schedules_target_id"), table_name="schedules")
    op.drop_index(op.f("ix_schedules_clip_sha256"), table_name="schedules")
    op.drop_table("schedules")
    op.drop_index(op.f("ix_broadcasts_created_ms"), table_name="broadcasts")
    op.drop_table("broadcasts")
    op.drop_table("published_documents")
    op.drop_table("clips")
