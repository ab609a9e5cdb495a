"""The edge's durable state in one SQLite file: outbox, seen commands, documents.

WAL with ``synchronous=FULL``: a row is on disk when the call returns, so a
power cut loses nothing that was acknowledged to the caller. It opens its file
through plumbing.sqlite, the only importer of sqlite3 on the agent host.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plumbing.sqlite import open_durable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    event_id TEXT,
    sent_ms INTEGER,
    tries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS seen_command (
    id TEXT PRIMARY KEY,
    exp_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS document (
    topic TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    cmd_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    saved_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS setting (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# Columns added for receipts (docs/delivery.md) to an outbox made by an older agent.
_OUTBOX_COLUMNS = {"event_id": "TEXT", "sent_ms": "INTEGER", "tries": "INTEGER NOT NULL DEFAULT 0"}
_RECEIPT_INDEX = "CREATE INDEX IF NOT EXISTS outbox_event_id ON outbox (event_id)"


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    qos: int
    event_id: str | None = None  # kept after PUBACK until the controller's receipt names it


@dataclass(frozen=True)
class StoredDocument:
    topic: str
    type: str
    version: int
    cmd_id: str
    payload: bytes


class LocalStore:
    """Thread-safe: one connection, one lock; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_durable(path, _SCHEMA, "state file")
        self._lock = threading.Lock()
        self._upgrade()

    def _upgrade(self) -> None:
        """Add what a newer agent keeps to a state file an older one made."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        for name, kind in _OUTBOX_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")
        self._db.execute(_RECEIPT_INDEX)

    def journal_mode(self) -> str:
        with self._lock:
            (mode,) = self._db.execute("PRAGMA journal_mode").fetchone()
        return str(mode)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def rows_written(self) -> int:
        """Rows inserted, changed or deleted since the file was opened (bench/receipts.py)."""
        with self._lock:
            return self._db.total_changes

    # outbox

    def outbox_put(
        self, topic: str, payload: bytes, qos: int, now_ms: int, event_id: str | None = None
    ) -> int:
        """Store a row; one with an ``event_id`` stays until a receipt names that id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, created_ms, event_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (topic, payload, qos, now_ms, event_id),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def outbox_batch(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """The oldest rows never sent after ``after_seq`` (those up to it are with the client)."""
        return self._rows(
            "SELECT seq, topic, payload, qos, event_id FROM outbox"
            " WHERE seq > ? AND sent_ms IS NULL ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )

    def outbox_due(self, now_ms: int, timeout_ms: int, max_ms: int, limit: int) -> list[OutboxRow]:
        """Rows the broker took but no receipt named in time: ``timeout_ms`` after the
        PUBACK, doubled for each resend so far, at most ``max_ms``."""
        return self._rows(
            "SELECT seq, topic, payload, qos, event_id FROM outbox"
            " WHERE sent_ms IS NOT NULL AND sent_ms + MIN(? << MIN(tries, 20), ?) <= ?"
            " ORDER BY seq LIMIT ?",
            (timeout_ms, max_ms, now_ms, limit),
        )

    def _rows(self, sql: str, args: tuple[int, ...]) -> list[OutboxRow]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [OutboxRow(seq, t, bytes(p), qos, e) for seq, t, p, qos, e in rows]

    def outbox_sent(self, seqs: Iterable[int], now_ms: int, *, resent: bool = False) -> None:
        """The broker has these rows (or a resend of them starts): wait for their receipt."""
        batch = [(now_ms, s) for s in seqs]
        if not batch:
            return
        sql = (
            "UPDATE outbox SET sent_ms = ?, tries = tries + 1 WHERE seq = ?"
            if resent
            else "UPDATE outbox SET sent_ms = ? WHERE seq = ?"
        )
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(sql, batch)
            self._db.execute("COMMIT")

    def outbox_reset_tries(self) -> None:
        """After a reconnect: every row past its first timeout is sent again at once."""
        with self._lock:
            self._db.execute("UPDATE outbox SET tries = 0 WHERE tries > 0")

    def outbox_forget_receipts(self) -> None:
        """Receipts switched off: rows waiting for one become new rows, sent once more and
        deleted on PUBACK."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET event_id = NULL, sent_ms = NULL, tries = 0"
                " WHERE event_id IS NOT NULL OR sent_ms IS NOT NULL"
            )

    def outbox_receipted(self, event_ids: Iterable[str]) -> int:
        """Delete the rows of these events, now stored by the controller; how many went."""
        batch = [(e,) for e in event_ids]
        if not batch:
            return 0
        with self._lock:
            self._db.execute("BEGIN")
            before = self._db.total_changes
            self._db.executemany("DELETE FROM outbox WHERE event_id = ?", batch)
            gone = self._db.total_changes - before
            self._db.execute("COMMIT")
        return gone

    def outbox_delete(self, seqs: Iterable[int]) -> None:
        batch = [(s,) for s in seqs]
        if not batch:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", batch)
            self._db.execute("COMMIT")

    def outbox_len(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def outbox_awaiting(self) -> int:
        """Rows the broker has and no receipt has named yet."""
        with self._lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NOT NULL"
            ).fetchone()
        return int(count)

    # replay protection

    def remember_command(self, cmd_id: str, exp_ms: int) -> bool:
        """Record a command id; False when it was already seen (a replay)."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO seen_command (id, exp_ms) VALUES (?, ?)", (cmd_id, exp_ms)
            )
        return cur.rowcount == 1

    def forget_commands_before(self, now_ms: int) -> int:
        """Expired commands are refused anyway, so their ids need not be kept."""
        with self._lock:
            cur = self._db.execute("DELETE FROM seen_command WHERE exp_ms < ?", (now_ms,))
        return cur.rowcount

    # documents

    def document(self, topic: str) -> StoredDocument | None:
        with self._lock:
            row = self._db.execute(
                "SELECT topic, type, version, cmd_id, payload FROM document WHERE topic = ?",
                (topic,),
            ).fetchone()
        return (
            None if row is None else StoredDocument(row[0], row[1], row[2], row[3], bytes(row[4]))
        )

    def documents(self) -> list[StoredDocument]:
        with self._lock:
            rows = self._db.execute(
                "SELECT topic, type, version, cmd_id, payload FROM document ORDER BY topic"
            ).fetchall()
        return [StoredDocument(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def save_document(self, doc: StoredDocument, now_ms: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO document (topic, type, version, cmd_id, payload, saved_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (doc.topic, doc.type, doc.version, doc.cmd_id, doc.payload, now_ms),
            )

    # small settings (device volume, ...)

    def setting(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM setting WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO setting (name, value) VALUES (?, ?)", (name, value)
            )
