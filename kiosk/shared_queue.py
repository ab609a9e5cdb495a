"""This kiosk's side of its office's one queue: the log on disk and the link to its peers.

The rules are kiosk/office_log.py; this adapter keeps the log durable (an
entry is on disk before it is acted on or sent) and exchanges it over MQTT
(protocol/office.py). Each act is published at once; on every (re)connection
the kiosk sends what it holds (``office.sync``) and each peer answers with
the entries of its own that are missing, so a cut of any length heals.
Between cuts each side goes on with what it knows: numbers cannot collide
(each kiosk has its own residue), and a ticket called on both sides goes to
the earliest call at the rejoin; the losing counter is told (``on_conflict``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from kiosk.numbering import DEFAULT_TZ, QueuePolicy, Refusal, Service, can_issue, format_number
from kiosk.numbering import local_day as _local_day
from kiosk.office_log import (
    Conflict,
    Entry,
    Kind,
    LogError,
    QueuedTicket,
    Replay,
    Settled,
    allows,
    have,
    merge,
    missing,
    number_after,
    stamp_after,
)
from kiosk.ticket_store import IssueRefused, TicketError
from plumbing.mqtt_client import guarded, new_client
from plumbing.sqlite import open_durable
from protocol.errors import Refusal as WireRefusal
from protocol.errors import RefusalReason
from protocol.office import (
    MAX_ENTRIES,
    OfficeEntries,
    OfficeEntry,
    office_entries,
    office_sync,
    read_office,
)
from protocol.topics import Topics

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS office_entry (
    kiosk TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kiosk, seq)
);
"""
_FIELDS = OfficeEntry.__struct_fields__


def _wire(e: Entry) -> OfficeEntry:
    data = asdict(e)
    return msgspec.convert({k: data[k] for k in _FIELDS}, OfficeEntry)


def _entry(kiosk: str, w: OfficeEntry) -> Entry:
    return Entry(kiosk=kiosk, **msgspec.structs.asdict(w))


class Taken(TicketError):
    """An act the shared queue no longer allows: another kiosk's counter got there first."""


class SharedQueue:
    """Thread-safe: one lock over the log; paho's thread only merges and answers."""

    def __init__(
        self,
        path: Path,
        *,
        queue: str,
        kiosk: str,
        kiosks: Sequence[str],
        topics: Topics,
        on_conflict: Callable[[Conflict], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if kiosk not in kiosks:
            raise ValueError(f"kiosk {kiosk!r} is not one of the queue's kiosks {list(kiosks)}")
        self.queue, self.kiosk, self.kiosks = queue, kiosk, tuple(kiosks)
        self.slot = self.kiosks.index(kiosk)
        self.topics = topics
        self.on_conflict = on_conflict
        self.on_change = on_change  # after a peer's entries are merged, outside the lock
        self._db = open_durable(path, _SCHEMA, "office queue file")
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self._log: dict[tuple[str, int], Entry] = {}
        for kiosk_id, body in self._db.execute("SELECT kiosk, body FROM office_entry"):
            e = _entry(kiosk_id, msgspec.json.decode(body, type=OfficeEntry))
            self._log[e.key] = e
        # what each act needs, kept as entries come rather than read off the whole log
        self._latest_ms = -1
        self._own_seq = 0
        self._top: dict[tuple[str, str], int] = {}  # (service, day) -> the highest number known
        self._issued: Counter[tuple[str, str]] = Counter()
        self._index(self._log.values())
        self._replay = Replay()
        self._replay.extend(self._log.values())
        self._settled = self._replay.settled()
        self._told = {c.entry.key for c in self._settled.conflicts}
        self._client: paho.Client | None = None
        self._up = False  # the link to the broker is up (from CONNACK to the disconnect)
        self.refused = 0  # messages from peers that did not fit (logged)

    # --- the queue, as this side knows it -------------------------------------------------

    def settled(self) -> Settled:
        with self._lock:
            return self._settled

    def entries(self) -> dict[tuple[str, int], Entry]:
        with self._lock:
            return dict(self._log)

    def issue(
        self,
        service: Service,
        now_ms: int,
        tz: str = DEFAULT_TZ,
        priority: bool = False,
        booking: tuple[str, int] | None = None,
    ) -> QueuedTicket:
        """A new number of this kiosk's own, on disk before this returns; raises IssueRefused.
        ``booking``: a booked citizen's code and slot, in the log for every kiosk's counters."""
        day = _local_day(now_ms, tz).isoformat()
        with self._lock:
            key = (service.code, day)
            n = number_after(self._top.get(key, 0), self.slot, len(self.kiosks))
            refusal = can_issue(service, now_ms, tz, self._issued[key])
            if refusal is None and n >= 10**service.digits:
                refusal = Refusal("limit", "Đã hết số trong ngày / No more numbers today")
            if refusal is not None:
                raise IssueRefused(refusal)
            seq = self._own_seq + 1
            e = self._append_locked(
                now_ms, "issue", f"{self.queue}:{self.kiosk}:{seq}", day=day,
                service=service.code, n=n, number=format_number(service.prefix, n, service.digits),
                priority=priority, booking=booking[0] if booking else "",
                slot_ms=booking[1] if booking else 0,
            )  # fmt: skip
            ticket = self._settled.tickets[e.ticket]
        self._publish(e)
        return ticket

    def call_next(
        self,
        counter: int,
        queues: Sequence[str],
        policy: QueuePolicy,
        now_ms: int,
        *,
        tz: str = DEFAULT_TZ,
        officer: str = "",
    ) -> QueuedTicket | None:
        """Call the next ticket by what this side knows; None when nobody waits."""
        day = _local_day(now_ms, tz).isoformat()
        with self._lock:
            order = self._settled.call_order(day, queues, policy)
            if not order:
                return None
            e = self._append_locked(now_ms, "call", order[0].id, counter=counter, officer=officer)
            ticket = self._settled.tickets[e.ticket]
        self._publish(e)
        return ticket

    def record(
        self,
        kind: Kind,
        ticket_id: str,
        now_ms: int,
        *,
        counter: int = 0,
        queue: str = "",
        officer: str = "",
    ) -> QueuedTicket:
        """A counter's act on a ticket (call a chosen one, skip, serve, transfer), if the
        ticket's state as this side knows it allows it; else TicketError."""
        with self._lock:
            t = self._settled.tickets.get(ticket_id)
            if kind == "issue" or not allows(t, kind, counter):
                where = "unknown" if t is None else f"{t.state} at counter {t.counter}"
                raise Taken(f"cannot {kind} ticket {ticket_id!r} at {counter}: {where}")
            e = self._append_locked(
                now_ms, kind, ticket_id, counter=counter, queue=queue, officer=officer
            )
            t = self._settled.tickets[ticket_id]
        self._publish(e)
        return t

    def _append_locked(self, now_ms: int, kind: Any, ticket: str, **kw: Any) -> Entry:
        e = Entry(self.kiosk, self._own_seq + 1, stamp_after(now_ms, self._latest_ms), kind,
                  ticket, **kw)  # fmt: skip
        self._store_locked([e])
        return e

    def _publish(self, e: Entry) -> None:
        """Out of the lock (paho's thread takes it to merge); QoS 1, not waited for: the
        next sync repairs a loss."""
        client = self._client
        if client is not None:
            payload = office_entries(self.queue, self.kiosk, [_wire(e)])
            client.publish(self.topics.office(self.kiosk), payload, qos=1)

    def _store_locked(self, new: Sequence[Entry]) -> list[Conflict]:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO office_entry (kiosk, seq, at_ms, body) VALUES (?, ?, ?, ?)",
                [(e.kiosk, e.seq, e.at_ms, msgspec.json.encode(_wire(e)).decode()) for e in new],
            )
        self._log.update((e.key, e) for e in new)
        self._index(new)
        if not self._replay.extend(new):  # a peer's act from before the last one: replay all
            self._replay = Replay()
            self._replay.extend(self._log.values())
        self._settled = self._replay.settled()
        fresh = [c for c in self._settled.conflicts if c.entry.key not in self._told]
        self._told.update(c.entry.key for c in fresh)
        self.changed.notify_all()
        return fresh

    def _index(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            self._latest_ms = max(self._latest_ms, e.at_ms)
            if e.kiosk == self.kiosk:
                self._own_seq = max(self._own_seq, e.seq)
            if e.kind == "issue":
                key = (e.service, e.day)
                self._top[key] = max(self._top.get(key, 0), e.n)
                self._issued[key] += 1

    def telemetry(self) -> dict[str, Any]:
        """The link to the other kiosks, for the agent's telemetry: up or cut, and how much."""
        with self._lock:
            return {
                "queue": self.queue,
                "connected": self._up,
                "entries": len(self._log),
                "conflicts": len(self._settled.conflicts),
                "refused": self.refused,
            }

    def wait_for(self, predicate: Callable[[Settled, dict[tuple[str, int], Entry]], bool],
                 timeout_s: float) -> bool:  # fmt: skip
        """Block until ``predicate(settled, log)`` holds (tests, the rejoin)."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self._settled, self._log), timeout_s)

    # --- the link ---------------------------------------------------------------------------

    def connect(
        self,
        host: str,
        port: int,
        username: str,
        password: str | None,
        *,
        tls: bool = False,
        ca_file: Path | None = None,
    ) -> None:
        """Join the office's kiosks through the broker; paho reconnects by itself."""
        client = new_client(
            f"xaso-{self.kiosk}-office", username, password, clean_session=True, tls=tls,
            ca_file=ca_file,
        )  # fmt: skip
        client.reconnect_delay_set(0.2, 2.0)  # type: ignore[arg-type]
        client.on_connect = guarded(self._on_connect)
        client.on_message = guarded(self._on_message)
        # up once the broker holds the subscription (SUBACK), not at CONNACK: what a peer
        # says from then on reaches this side
        client.on_subscribe = guarded(lambda *_: self._link(up=True))
        client.on_disconnect = guarded(lambda *_: self._link(up=False))
        self._client = client
        client.connect_async(host, port, keepalive=10)
        client.loop_start()

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        with self._lock:
            self._db.close()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("office queue %s: broker refused the link: %s", self.queue, reason)
            return
        peers = [(self.topics.office(k), 1) for k in self.kiosks if k != self.kiosk]
        if peers:
            client.subscribe(peers)  # up at its SUBACK
        self._send_sync(client)
        if not peers:
            self._link(up=True)

    def _link(self, *, up: bool) -> None:
        with self.changed:
            self._up = up
            self.changed.notify_all()

    @property
    def connected(self) -> bool:
        return self._up

    def wait_link(self, *, up: bool, timeout_s: float) -> bool:
        """Block until the link is up (or down): a cut seen, a rejoin made."""
        with self.changed:
            return self.changed.wait_for(lambda: self._up == up, timeout_s)

    def _send_sync(self, client: paho.Client) -> None:
        with self._lock:
            held = have(self._log)
        client.publish(
            self.topics.office(self.kiosk), office_sync(self.queue, self.kiosk, held), qos=1
        )

    def _on_message(self, client: paho.Client, _u: Any, msg: Any) -> None:
        sender = msg.topic.split("/")[-2]
        try:
            if sender not in self.kiosks or sender == self.kiosk:
                raise WireRefusal(RefusalReason.WRONG_TOPIC, f"{sender!r} is no peer of this queue")
            wire = read_office(msg.payload, sender, self.queue)
        except WireRefusal as exc:
            self.refused += 1
            log.warning("office queue %s: refused a message on %s: %s", self.queue, msg.topic, exc)
            return
        if isinstance(wire, OfficeEntries):
            self._merge([_entry(sender, w) for w in wire.entries])
            return
        with self._lock:
            mine = missing(self._log, self.kiosk, wire.have)
            behind = have(self._log).get(sender, 0) < wire.have.get(sender, 0)
        for i in range(0, len(mine), MAX_ENTRIES):
            batch = [_wire(e) for e in mine[i : i + MAX_ENTRIES]]
            client.publish(
                self.topics.office(self.kiosk), office_entries(self.queue, self.kiosk, batch), qos=1
            )
        if behind:  # the peer holds acts of its own this side lacks: ask for them
            self._send_sync(client)

    def _merge(self, entries: list[Entry]) -> None:
        with self._lock:
            try:
                merge(self._log, entries)
            except LogError as exc:
                self.refused += 1
                log.warning("office queue %s: %s", self.queue, exc)
                return
            new = [e for e in entries if e.key not in self._log]
            fresh = self._store_locked(new) if new else []
        for c in fresh:
            if self.on_conflict is not None:
                self.on_conflict(c)
        if new and self.on_change is not None:
            self.on_change()
