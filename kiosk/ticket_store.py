"""The kiosk's tickets in one SQLite file: the only importer of sqlite3 in kiosk/.

A number must never be issued twice on one day, nor skipped without a record,
even across kill -9 or a power cut. So ``issue`` reads and bumps the day's
counter and inserts the ticket in one ``BEGIN IMMEDIATE`` transaction, in WAL
with ``synchronous=FULL``: when it returns the ticket is on disk, and only then
does the caller print it. A crash before the commit issues nothing; after it,
the ticket exists and ``pending_prints`` offers it for a reprint.

Ticket states: ``waiting`` -> ``called`` (call_next, call_ticket, recall) ->
``served`` (serve_done, then one ``rate``) or ``skipped`` (no-show;
``call_ticket`` brings it back). ``ticket_action`` keeps who did each act.
``transfer`` puts a waiting or called ticket into another service's
queue with its number and its place by issuing time.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from kiosk.numbering import (
    DEFAULT_TZ,
    RATINGS,
    SERVICE_CODE,
    QueuePolicy,
    Refusal,
    Service,
    can_issue,
    format_number,
    local_day,
    next_ticket,
)
from plumbing.sqlite import open_durable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS day_counter (
    service TEXT NOT NULL,
    day TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (service, day)
);
CREATE TABLE IF NOT EXISTS ticket (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    queue TEXT NOT NULL,
    day TEXT NOT NULL,
    n INTEGER NOT NULL,
    number TEXT NOT NULL,
    priority INTEGER NOT NULL,
    issued_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    printed INTEGER NOT NULL DEFAULT 0,
    counter INTEGER,
    called_ms INTEGER,
    recalls INTEGER NOT NULL DEFAULT 0,
    served_ms INTEGER,
    rating INTEGER,
    UNIQUE (service, day, n)
);
CREATE INDEX IF NOT EXISTS ticket_queue ON ticket (day, queue, state);
CREATE TABLE IF NOT EXISTS ticket_action (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id TEXT NOT NULL,
    action TEXT NOT NULL,
    counter INTEGER,
    officer TEXT,
    at_ms INTEGER NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS ticket_action_ticket ON ticket_action (ticket_id);
CREATE TABLE IF NOT EXISTS counter_state (
    counter INTEGER PRIMARY KEY,
    paused INTEGER NOT NULL
);
"""
_COLUMNS = (
    "id, service, queue, day, n, number, priority, issued_ms, state, printed,"
    " counter, called_ms, recalls, served_ms, rating"
)


class TicketError(Exception):
    """An unknown ticket, or a transition its state does not allow."""


class IssueRefused(Exception):
    """No number now: closed, or the daily limit is reached."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True)
class Ticket:
    id: str
    service: str  # the service that issued the number
    queue: str  # the service it waits for now (differs after a transfer)
    day: date
    n: int
    number: str
    priority: bool
    issued_ms: int
    state: str
    printed: bool
    counter: int | None
    called_ms: int | None
    recalls: int
    served_ms: int | None
    rating: int | None


def booked_note(code: str, slot_ms: int) -> str:
    """The note of a redeemed booking's ``booked`` action (kiosk/bookings.py reads it)."""
    return json.dumps({"code": code, "slot_ms": slot_ms})


def _ticket(row: Sequence[Any]) -> Ticket:
    return Ticket(
        row[0], row[1], row[2], date.fromisoformat(row[3]), row[4], row[5], bool(row[6]),
        row[7], row[8], bool(row[9]), row[10], row[11], row[12], row[13], row[14],
    )  # fmt: skip


@dataclass(frozen=True)
class Action:
    """One officer's act on a ticket (call, recall, serve, skip, transfer) or a rating."""

    ticket_id: str
    action: str
    counter: int | None
    officer: str | None
    at_ms: int
    note: str | None


@dataclass(frozen=True)
class Mirrored:
    """A ticket as the office's shared queue has it; ``own``: issued by this kiosk."""

    id: str
    service: str
    queue: str
    day: str
    n: int
    number: str
    priority: bool
    issued_ms: int
    state: str
    counter: int
    called_ms: int
    own: bool
    booking: str = ""  # booked ahead at a peer: recorded here as its "booked" action
    slot_ms: int = 0


@dataclass
class _Move:
    db: sqlite3.Connection
    before: Ticket
    after: Ticket | None = None

    def done(self) -> Ticket:
        assert self.after is not None
        return self.after


class TicketStore:
    """Thread-safe: one connection, one lock; every change is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_durable(path, _SCHEMA, "ticket file")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: the write lock is taken before anything is read."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def issue(
        self, service: Service, now_ms: int, tz: str = DEFAULT_TZ, priority: bool = False
    ) -> Ticket:
        """A new number, on disk before this returns; raises IssueRefused."""
        day = local_day(now_ms, tz).isoformat()
        with self._tx() as db:
            row = db.execute(
                "SELECT n FROM day_counter WHERE service = ? AND day = ?", (service.code, day)
            ).fetchone()
            issued = 0 if row is None else int(row[0])
            refusal = can_issue(service, now_ms, tz, issued)
            if refusal is not None:
                raise IssueRefused(refusal)
            n = issued + 1
            db.execute(
                "INSERT INTO day_counter (service, day, n) VALUES (?, ?, ?)"
                " ON CONFLICT (service, day) DO UPDATE SET n = excluded.n",
                (service.code, day, n),
            )
            ticket_id = str(uuid.uuid4())
            db.execute(
                "INSERT INTO ticket (id, service, queue, day, n, number, priority, issued_ms,"
                " state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'waiting')",
                (
                    ticket_id, service.code, service.code, day, n,
                    format_number(service.prefix, n, service.digits), int(priority), now_ms,
                ),
            )  # fmt: skip
            return self._get(db, ticket_id)

    def mirror(self, tickets: Sequence[Mirrored]) -> None:
        """Take the office's shared queue's view of these tickets (kiosk/shared_queue.py):
        a peer's ticket is added as printed (its own kiosk prints it), a known one takes
        the queue's state, counter and call; what only this kiosk keeps (printed, recalls,
        service time, rating) stays. Not synced to disk on its own (the office's log is
        the durable record, mirrored again at start); the next durable commit covers it."""
        with self._lock:  # no other commit runs while the file is not synced
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._mirror_locked(tickets)
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def _mirror_locked(self, tickets: Sequence[Mirrored]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO ticket (id, service, queue, day, n, number, priority, issued_ms,"
                " state, printed, counter, called_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, state = excluded.state,"
                " counter = excluded.counter, called_ms = excluded.called_ms",
                [
                    (
                        m.id, m.service, m.queue, m.day, m.n, m.number, int(m.priority),
                        m.issued_ms, m.state, int(not m.own), m.counter or None,
                        m.called_ms or None,
                    )
                    for m in tickets
                ],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO ticket_action (ticket_id, action, at_ms, note)"
                " SELECT ?, 'booked', ?, ? WHERE NOT EXISTS (SELECT 1 FROM ticket_action"
                " WHERE ticket_id = ? AND action = 'booked')",
                [
                    (m.id, m.issued_ms, booked_note(m.booking, m.slot_ms), m.id)
                    for m in tickets
                    if m.booking and not m.own
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def ticket(self, ticket_id: str) -> Ticket:
        with self._lock:
            return self._get(self._db, ticket_id)

    @staticmethod
    def _select(db: sqlite3.Connection, where: str, args: Sequence[object]) -> list[Ticket]:
        sql = f"SELECT {_COLUMNS} FROM ticket WHERE {where}"  # noqa: S608 (literals of this module)
        return [_ticket(r) for r in db.execute(sql, args).fetchall()]

    def _get(self, db: sqlite3.Connection, ticket_id: str) -> Ticket:
        found = self._select(db, "id = ?", (ticket_id,))
        if not found:
            raise TicketError(f"no ticket with id {ticket_id!r}")
        return found[0]

    def tickets(self, day: date, service_code: str | None = None) -> list[Ticket]:
        """Every ticket of ``day`` (of one issuing service), in issuing order."""
        with self._lock:
            return self._select(
                self._db,
                "day = ? AND (?2 IS NULL OR service = ?2) ORDER BY issued_ms, n",
                (day.isoformat(), service_code),
            )

    def mark_printed(self, ticket_id: str) -> None:
        with self._tx() as db:
            self._get(db, ticket_id)
            db.execute("UPDATE ticket SET printed = 1 WHERE id = ?", (ticket_id,))

    def pending_prints(self) -> list[Ticket]:
        """Issued, still waiting, never printed: to reprint after paper out or a crash."""
        with self._lock:
            return self._select(
                self._db, "printed = 0 AND state = 'waiting' ORDER BY issued_ms, n", ()
            )

    def waiting(self, service_code: str, day: date) -> list[Ticket]:
        """The queue of one service on one day, in issuing order (not call order)."""
        with self._lock:
            return self._waiting(self._db, (service_code,), day.isoformat())

    def _waiting(self, db: sqlite3.Connection, codes: Sequence[str], day: str) -> list[Ticket]:
        return self._select(
            db,
            "day = ? AND state = 'waiting' AND queue IN (SELECT value FROM json_each(?))"
            " ORDER BY issued_ms, n",
            (day, json.dumps(list(codes))),
        )

    def normal_since_priority(self, service_codes: Sequence[str], day: date) -> int:
        """Normal tickets called for these services since the last priority one."""
        with self._lock:
            return self._normal_since_priority(self._db, service_codes, day.isoformat())

    def _normal_since_priority(self, db: sqlite3.Connection, codes: Sequence[str], day: str) -> int:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM ticket WHERE day = ?1 AND priority = 0"
            " AND queue IN (SELECT value FROM json_each(?2)) AND called_ms > COALESCE("
            "(SELECT MAX(called_ms) FROM ticket WHERE day = ?1 AND priority = 1"
            " AND queue IN (SELECT value FROM json_each(?2))), -1)",
            (day, json.dumps(list(codes))),
        ).fetchone()
        return int(count)

    def call_next(
        self,
        counter: int,
        service_codes: Sequence[str],
        policy: QueuePolicy,
        now_ms: int,
        tz: str = DEFAULT_TZ,
    ) -> Ticket | None:
        """Call the next of today's tickets for these services to ``counter``; None if none."""
        if counter < 1:
            raise TicketError(f"counter must be >= 1, not {counter}")
        if not service_codes:
            raise TicketError("call_next needs at least one service")
        day = local_day(now_ms, tz).isoformat()
        with self._tx() as db:
            waiting = self._waiting(db, service_codes, day)
            chosen = next_ticket(
                waiting, policy, self._normal_since_priority(db, service_codes, day)
            )
            if chosen is None:
                return None
            db.execute(
                "UPDATE ticket SET state = 'called', counter = ?, called_ms = ?, recalls = 0"
                " WHERE id = ?",
                (counter, now_ms, chosen.id),
            )
            return self._get(db, chosen.id)

    @contextmanager
    def _move(self, action: str, ticket_id: str, allowed: tuple[str, ...]) -> Iterator[_Move]:
        """A transaction on one ticket whose state must be one of ``allowed``."""
        with self._tx() as db:
            t = self._get(db, ticket_id)
            if t.state not in allowed:
                raise TicketError(
                    f"cannot {action} ticket {t.number} ({t.service}, {t.day}): it is"
                    f" {t.state}, not {' or '.join(allowed)}"
                )
            move = _Move(db, t)
            yield move
            move.after = self._get(db, ticket_id)

    def call_ticket(self, ticket_id: str, counter: int, now_ms: int) -> Ticket:
        """Call one chosen number to ``counter``: a waiting one, or a no-show brought back."""
        with self._move("call", ticket_id, ("waiting", "skipped")) as m:
            m.db.execute(
                "UPDATE ticket SET state = 'called', counter = ?, called_ms = ?,"
                " recalls = CASE state WHEN 'skipped' THEN recalls + 1 ELSE 0 END WHERE id = ?",
                (counter, now_ms, ticket_id),
            )
        return m.done()

    def by_number(self, day: date, number: str) -> Ticket | None:
        """The ticket of ``day`` with this number (prefixes are unique per kiosk)."""
        with self._lock:
            found = self._select(self._db, "day = ? AND number = ?", (day.isoformat(), number))
        return found[0] if found else None

    def record_action(
        self,
        ticket_id: str,
        action: str,
        at_ms: int,
        *,
        counter: int | None = None,
        officer: str | None = None,
        note: str | None = None,
    ) -> None:
        """Who did what to a ticket: the office's own record, kept beside the ticket."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO ticket_action (ticket_id, action, counter, officer, at_ms, note)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (ticket_id, action, counter, officer, at_ms, note),
            )

    def notes_of_day(self, action: str, day: date) -> list[tuple[Ticket, str | None]]:
        """Today's tickets with one kind of action, and its note (a redeemed booking's)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.ticket_id, a.note FROM ticket_action a JOIN ticket t ON t.id ="
                " a.ticket_id WHERE a.action = ? AND t.day = ? ORDER BY a.seq",
                (action, day.isoformat()),
            ).fetchall()
            return [(self._get(self._db, tid), note) for tid, note in rows]

    def actions(self, ticket_id: str) -> list[Action]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ticket_id, action, counter, officer, at_ms, note FROM ticket_action"
                " WHERE ticket_id = ? ORDER BY seq",
                (ticket_id,),
            ).fetchall()
        return [Action(*r) for r in rows]

    def recall(self, ticket_id: str) -> Ticket:
        """Call again (also a no-show who came back): same counter."""
        with self._move("recall", ticket_id, ("called", "skipped")) as m:
            m.db.execute(
                "UPDATE ticket SET state = 'called', recalls = recalls + 1 WHERE id = ?",
                (ticket_id,),
            )
        return m.done()

    def skip(self, ticket_id: str) -> Ticket:
        """A no-show."""
        with self._move("skip", ticket_id, ("called",)) as m:
            m.db.execute("UPDATE ticket SET state = 'skipped' WHERE id = ?", (ticket_id,))
        return m.done()

    def serve_done(self, ticket_id: str, now_ms: int) -> Ticket:
        with self._move("finish", ticket_id, ("called",)) as m:
            m.db.execute(
                "UPDATE ticket SET state = 'served', served_ms = ? WHERE id = ?",
                (now_ms, ticket_id),
            )
        return m.done()

    def transfer(self, ticket_id: str, to_service: str) -> Ticket:
        """Into ``to_service``'s queue, keeping the number and the place by issuing time."""
        if re.match(SERVICE_CODE, to_service) is None:
            raise TicketError(f"{to_service!r} is not a service code")
        with self._move("transfer", ticket_id, ("waiting", "called")) as m:
            m.db.execute(
                "UPDATE ticket SET state = 'waiting', queue = ?, counter = NULL,"
                " called_ms = NULL, recalls = 0 WHERE id = ?",
                (to_service, ticket_id),
            )
        return m.done()

    def rate(self, ticket_id: str, level: int) -> Ticket:
        """Record the citizen's rating, once, for a served ticket (see numbering.RATINGS)."""
        if level not in RATINGS:
            raise TicketError(f"a rating is 1 (Rất không hài lòng) to 5 (Rất hài lòng): {level}")
        with self._move("rate", ticket_id, ("served",)) as m:
            if m.before.rating is not None:
                raise TicketError(f"ticket {m.before.number} ({m.before.day}) is already rated")
            m.db.execute("UPDATE ticket SET rating = ? WHERE id = ?", (level, ticket_id))
        return m.done()

    def set_paused(self, counter: int, paused: bool) -> None:
        """A counter's pause survives a restart: an officer at lunch stays paused."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO counter_state (counter, paused) VALUES (?, ?)"
                " ON CONFLICT (counter) DO UPDATE SET paused = excluded.paused",
                (counter, int(paused)),
            )

    def paused_counters(self) -> set[int]:
        with self._lock:
            rows = self._db.execute("SELECT counter FROM counter_state WHERE paused = 1")
            return {int(r[0]) for r in rows.fetchall()}

    def service_times(
        self, service_code: str, day: date, limit: int = 20
    ) -> list[tuple[int, float]]:
        """The latest services (served_ms, seconds from call to done) of one queue, for the
        wait (protocol.queue_wait)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT served_ms, (served_ms - called_ms) / 1000.0 FROM ticket WHERE day = ?"
                " AND queue = ? AND state = 'served' AND served_ms IS NOT NULL AND called_ms IS NOT"
                " NULL ORDER BY served_ms DESC LIMIT ?",  # a peer's service time stays there
                (day.isoformat(), service_code, limit),
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]
