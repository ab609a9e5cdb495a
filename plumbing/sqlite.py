"""The durable SQLite opener that the agent's state and the kiosk's tickets share."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class StoreError(Exception):
    """A state file cannot be opened or written."""


def open_durable(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """A SQLite file that loses nothing it acknowledged, even to a power cut.

    WAL with ``synchronous=FULL``; autocommit, so callers open their own
    transactions; shared by one lock across threads (the caller's).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the {what} {path}: {exc}") from exc
    return db
