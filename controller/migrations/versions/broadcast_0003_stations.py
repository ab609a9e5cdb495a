"""Broadcasting: the stations the commune relays, and schedule entries that relay one

Revision ID: broadcast_0003_stations
Revises: broadcast_0002

A station (VOV1, the province's radio) has a name, an http(s) stream URL, the
level it plays at and what airs when its stream fails (a clip of the library,
or nothing: the relay stops). A schedule entry may name a station instead of a
clip; its stream is the station's at each publish. The column is added in a
batch, so SQLite (which cannot add a foreign key in place) copies the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0003_stations"
down_revision: str | Sequence[str] | None = "broadcast_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relay_stations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("on_failure", sa.String(length=8), nullable=False),
        sa.Column("fallback_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fallback_sha256"],
            ["clips.sha256"],
            name=op.f("fk_relay_stations_fallback_sha256_clips"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_stations")),
        sa.UniqueConstraint("name", name=op.f("uq_relay_stations_name")),
    )
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("station_id", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_schedules_station_id"), ["station_id"])
        batch.create_foreign_key(
            batch.f("fk_schedules_station_id_relay_stations"),
            "relay_stations",
            ["station_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_constraint(batch.f("fk_schedules_station_id_relay_stations"), type_="foreignkey")
        batch.drop_index(batch.f("ix_schedules_station_id"))
        batch.drop_column("station_id")
    op.drop_table("relay_stations")
