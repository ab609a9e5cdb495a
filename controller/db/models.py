"""Every controller table, imported here so Alembic and the app see one metadata.

Each area keeps its tables in its own module; this module only gathers them.
"""

from __future__ import annotations

from controller.db import auth_tables, broadcast_tables, fleet_tables, queue_tables  # noqa: F401
