"""Fleet: webhook_deliveries.commune, whose receiver a delivery is owed to

Revision ID: fleet_0008_webhook_communes
Revises: fleet_0007_communes

NULL is the province's webhook (``[alerts] webhook_url``), which gets every
alert; a commune's (``[alerts.commune_webhooks]``) gets its devices' alerts.
Deliveries queued before were all the province's, so they stay NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fleet_0008_webhook_communes"
down_revision: str | Sequence[str] | None = "fleet_0007_communes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("commune", sa.String(length=48), nullable=True))
    op.create_index(op.f("ix_webhook_deliveries_commune"), "webhook_deliveries", ["commune"])


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_deliveries_commune"), table_name="webhook_deliveries")
    op.drop_column("webhook_deliveries", "commune")
