"""A counter that moves when a committed transaction wrote what the device list shows.

Shared pages (controller/fleet/shared_pages.py) are kept only while it stands
still: a status or reading written by ingest, an alert raised or cleared, a
device added or a document signed, by any code path of this process, makes
the next request read afresh. It listens on the engine, below every writer,
so no writer can forget to say so. Writes by other replicas are not seen;
the pages' short lifetime bounds those.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from sqlalchemy import Engine, event

# the tables behind the device list, its counts and the documents a device is behind on
SHOWN = ("devices", "groups", "device_groups", "device_state", "behind_devices", "alerts",
         "published_documents")  # fmt: skip
_WRITE = re.compile(
    r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(" + "|".join(SHOWN) + r")\b",
    re.IGNORECASE,
)
_DIRTY = "xaso.fleet_written"  # in the connection's info until its transaction ends


class FleetWrites:
    """``version`` goes up once per committed transaction that wrote one of SHOWN."""

    def __init__(self, engine: Engine) -> None:
        self.version = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._executing)
        event.listen(engine, "commit", self._committed)
        event.listen(engine, "rollback", self._rolled_back)

    def _executing(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip()[:6].upper().startswith("SELECT") and _WRITE.match(statement):
            conn.info[_DIRTY] = True

    def _committed(self, conn: Any) -> None:
        if conn.info.pop(_DIRTY, False):
            with self._lock:
                self.version += 1

    def _rolled_back(self, conn: Any) -> None:
        conn.info.pop(_DIRTY, None)
