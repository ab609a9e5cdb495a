"""Every controller table, imported here so Alembic and the app see one metadata.

Each area keeps its tables in its own module; this module only gathers them.
"""

from __future__ import annotations

import controller.db.auth_tables  # noqa: F401
import controller.db.broadcast_tables  # noqa: F401
