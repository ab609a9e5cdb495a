"""Queue: bookings ahead and the public booking page's attempts (controller/queue/)

Revision ID: queue_0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "queue_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("queue",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("kiosk", sa.String(length=48), nullable=False),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("slot_ms", sa.BigInteger(), nullable=False),
        sa.Column("slot_min", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("cancelled_ms", sa.BigInteger(), nullable=True),
        sa.Column("place", sa.Integer(), nullable=True),
        sa.Column("phone_place", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_bookings")),
        sa.UniqueConstraint("kiosk", "service", "slot_ms", "place", name="uq_bookings_place"),
        sa.UniqueConstraint("phone", "day", "phone_place", name="uq_bookings_phone_place"),
    )
    op.create_index("ix_bookings_kiosk_slot", "bookings", ["kiosk", "slot_ms"])
    op.create_index("ix_bookings_phone_day", "bookings", ["phone", "day"])
    op.create_table(
        "booking_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_attempts")),
    )
    op.create_index("ix_booking_attempts_ip_at", "booking_attempts", ["ip", "at_ms"])


def downgrade() -> None:
    op.drop_index("ix_booking_attempts_ip_at", table_name="booking_attempts")
    op.drop_table("booking_attempts")
    op.drop_index("ix_bookings_phone_day", table_name="bookings")
    op.drop_index("ix_bookings_kiosk_slot", table_name="bookings")
    op.drop_table("bookings")
