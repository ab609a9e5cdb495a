"""Fleet: a durable queue of webhook deliveries in place of the alerts' delivery columns

Revision ID: fleet_0002
Revises: fleet_0001

Deliveries the old columns still owed (pending, or claimed by a replica that
may have died) are queued, with the body the sender used to build, then the
columns go. SQLite (3.35 and later) drops a column in place, so the alerts
table is not rebuilt.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fleet_0002"
down_revision: str | Sequence[str] | None = "fleet_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_COLUMNS = (
    "raise_delivery",
    "clear_delivery",
    "delivery_attempts",
    "delivery_claimed_ms",
    "delivery_error",
)
OWED = ("pending", "sending")
ALERT_FIELDS = (
    "id",
    "kind",
    "device_id",
    "severity",
    "raised_ms",
    "cleared_ms",
    "message_vi",
    "message_en",
    "details",
)


def upgrade() -> None:
    deliveries = op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=36), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease", sa.String(length=32), nullable=True),
        sa.Column("leased_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("done_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("key", name=op.f("uq_webhook_deliveries_key")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_due", ["status", "due_ms"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_alert_id"), ["alert_id"], unique=False
        )

    alerts = sa.table(
        "alerts",
        *(sa.column(name) for name in ALERT_FIELDS if name != "details"),
        sa.column("details", sa.JSON()),
        sa.column("raise_delivery"),
        sa.column("clear_delivery"),
    )
    owed = op.get_bind().execute(
        sa.select(alerts)
        .where(alerts.c.raise_delivery.in_(OWED) | alerts.c.clear_delivery.in_(OWED))
        .order_by(alerts.c.id)
    )
    rows = []
    for alert in owed.mappings():
        body = {name: alert[name] for name in ALERT_FIELDS}
        for action, column, at in (
            ("raised", "raise_delivery", alert["raised_ms"]),
            ("cleared", "clear_delivery", alert["cleared_ms"]),
        ):
            if alert[column] in OWED:
                rows.append(_owed(alert["id"], action, body, at))
    if rows:
        op.bulk_insert(deliveries, rows)
    for name in OLD_COLUMNS:
        op.drop_column("alerts", name)


def _owed(alert_id: int, action: str, alert: dict[str, object], at_ms: int) -> dict[str, object]:
    return {
        "key": str(uuid.uuid4()),
        "alert_id": alert_id,
        "action": action,
        "payload": {"action": action, "alert": alert},
        "status": "pending",
        "attempts": 0,
        "due_ms": 0,
        "created_ms": at_ms,
    }


def downgrade() -> None:
    for name, kind, default in (
        ("raise_delivery", sa.String(length=8), "none"),
        ("clear_delivery", sa.String(length=8), "none"),
        ("delivery_attempts", sa.Integer(), "0"),
    ):
        op.add_column("alerts", sa.Column(name, kind, nullable=False, server_default=default))
    op.add_column("alerts", sa.Column("delivery_claimed_ms", sa.BigInteger(), nullable=True))
    op.add_column("alerts", sa.Column("delivery_error", sa.Text(), nullable=True))
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_alert_id"))
        batch_op.drop_index("ix_webhook_deliveries_due")
    op.drop_table("webhook_deliveries")
