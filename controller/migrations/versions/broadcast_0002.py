"""Broadcasting: each broadcast keeps the speakers it reached and counts their answers

Revision ID: broadcast_0002
Revises: broadcast_0001

An emergency is published before any per-device row is written: the
broadcast's own row lists the speakers it reached and counts the answers as
they come, and an ack makes its device's row. Existing broadcasts get their
list and counts from their ack rows (which stay). Downgrading writes the
unanswered rows back, as the older code expects one per speaker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "broadcast_0002"
down_revision: str | Sequence[str] | None = "broadcast_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BROADCASTS = sa.table(
    "broadcasts",
    sa.column("id", sa.String),
    sa.column("devices", sa.JSON),
    sa.column("answered", sa.Integer),
    sa.column("answered_ok", sa.Integer),
)
ACKS = sa.table(
    "broadcast_acks",
    sa.column("broadcast_id", sa.String),
    sa.column("device", sa.String),
    sa.column("ok", sa.Boolean),
)


def upgrade() -> None:
    op.add_column(
        "broadcasts", sa.Column("devices", sa.JSON(), server_default="[]", nullable=False)
    )
    op.add_column(
        "broadcasts", sa.Column("answered", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "broadcasts", sa.Column("answered_ok", sa.Integer(), server_default="0", nullable=False)
    )
    conn = op.get_bind()
    per: dict[str, list[tuple[str, bool | None]]] = {}
    for bid, device, ok in conn.execute(
        sa.select(ACKS.c.broadcast_id, ACKS.c.device, ACKS.c.ok).order_by(ACKS.c.device)
    ):
        per.setdefault(bid, []).append((device, ok))
    rows = [
        {
            "b_id": bid,
            "b_devices": [d for d, _ok in acks],
            "b_answered": sum(ok is not None for _d, ok in acks),
            "b_ok": sum(ok is True for _d, ok in acks),
        }
        for bid, acks in per.items()
    ]
    if rows:
        conn.execute(
            BROADCASTS.update()
            .where(BROADCASTS.c.id == sa.bindparam("b_id"))
            .values(
                devices=sa.bindparam("b_devices", type_=sa.JSON),
                answered=sa.bindparam("b_answered"),
                answered_ok=sa.bindparam("b_ok"),
            ),
            rows,
        )


def downgrade() -> None:
    conn = op.get_bind()
    have = {(b, d) for b, d in conn.execute(sa.select(ACKS.c.broadcast_id, ACKS.c.device))}
    missing = [
        {"broadcast_id": bid, "device": device}
        for bid, devices in conn.execute(sa.select(BROADCASTS.c.id, BROADCASTS.c.devices))
        for device in (json.loads(devices) if isinstance(devices, str) else devices)
        if (bid, device) not in have
    ]
    if missing:
        conn.execute(ACKS.insert(), missing)
    for column in ("answered_ok", "answered", "devices"):
        op.drop_column("broadcasts", column)
