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
    created_ms INTEGER NOT NULL
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


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    qos: int


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

    def journal_mode(self) -> str:
        with self._lock:
            (mode,) = self._db.execute("PRAGMA journal_mode").fetchone()
        return str(mode)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # outbox

    def outbox_put(self, topic: str, payload: bytes, qos: int, now_ms: int) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, created_ms) VALUES (?, ?, ?, ?)",
                (topic, payload, qos, now_ms),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def outbox_batch(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """The oldest rows after ``after_seq`` (rows up to it are already with the client)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [OutboxRow(seq, topic, bytes(payload), qos) for seq, topic, payload, qos in rows]

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
