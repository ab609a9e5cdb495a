"""A ticket's status for the citizen's phone, from the ``ticket.*`` events the controller holds.

The kiosk prints a QR code to ``{controller}/ve/{kiosk}/{ticket id}`` when it is given
the controller's public address, so a phone off the office Wi-Fi can follow the queue.
The controller has no ticket file: it replays the day's events of that kiosk (and of
the other kiosks of its office queue, whose counters call the same tickets) into each
ticket's state, then tells the people ahead and the wait by the kiosk's own rule
(protocol.queue_wait).

``replay`` and ``status_of`` are pure (events and time in, status out). The people
ahead are counted as a strict-priority queue: priority tickets first, then by issue
time; a kiosk whose office interleaves priority tickets may call a normal ticket a
little sooner than this says. Counters open for a queue are those that served it
today and are not paused; none yet counts as one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.db.fleet_tables import EventRecord
from protocol.errors import Refusal
from protocol.events import (
    Body,
    CounterState,
    TicketCalled,
    TicketIssued,
    TicketRecord,
    TicketServed,
    TicketSkipped,
    TicketTransferred,
    read_body,
)
from protocol.queue_wait import Wait, recent_service_times_s, ticket_wait

State = Literal["waiting", "called", "served", "skipped"]
TYPES = (
    "ticket.issued",
    "ticket.called",
    "ticket.served",
    "ticket.skipped",
    "ticket.transferred",
    "counter.state",
)
DAY_MS = 86_400_000
CACHE_S = 2.0  # a hall of phones reloading every 15 s shares one replay per kiosk


@dataclass(frozen=True)
class TicketState:
    ticket_id: str
    number: str
    service: str
    queue: str
    day: str
    priority: bool
    issued_ms: int
    state: State = "waiting"
    counter: int | None = None


@dataclass
class Day:
    """One kiosk's (or office queue's) tickets as the events tell them."""

    tickets: dict[str, TicketState] = field(default_factory=dict)
    served: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # queue: (at, s)
    counters: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # queue: counters
    paused: set[tuple[str, int]] = field(default_factory=set)  # (device, counter)


@dataclass(frozen=True)
class Status:
    ticket: TicketState
    wait: Wait | None  # only while it waits


def replay(events: Iterable[tuple[str, int, Body]]) -> Day:
    """``(device, ts_ms, body)`` in time order into each ticket's state (pure)."""
    day = Day()
    for device, ts, body in events:
        if isinstance(body, CounterState):
            (day.paused.add if body.paused else day.paused.discard)((device, body.counter))
            continue
        if not isinstance(body, TicketRecord):
            continue
        if isinstance(body, TicketIssued):
            day.tickets[body.ticket_id] = TicketState(
                body.ticket_id,
                body.number,
                body.service,
                body.queue,
                body.day,
                body.priority,
                body.issued_ms,
            )
            continue
        known = day.tickets.get(body.ticket_id)
        if known is None:
            continue  # its issue is older than what was read, or from an unknown kiosk
        if isinstance(body, TicketCalled):
            day.tickets[known.ticket_id] = replace(known, state="called", counter=body.counter)
            day.counters.setdefault(known.queue, set()).add((device, body.counter))
        elif isinstance(body, TicketServed):
            day.tickets[known.ticket_id] = replace(known, state="served", counter=body.counter)
            day.served.setdefault(known.queue, []).append((ts, body.service_ms / 1000))
        elif isinstance(body, TicketSkipped):
            day.tickets[known.ticket_id] = replace(known, state="skipped", counter=body.counter)
        elif isinstance(body, TicketTransferred):
            day.tickets[known.ticket_id] = replace(
                known, queue=body.to_queue, state="waiting", counter=None
            )
    return day


def status_of(day: Day, ticket_id: str, now_ms: int) -> Status | None:
    """The ticket's state, and while it waits the people ahead and the wait (pure)."""
    t = day.tickets.get(ticket_id)
    if t is None:
        return None
    if t.state != "waiting":
        return Status(t, None)
    ahead = sum(
        1
        for o in day.tickets.values()
        if o.state == "waiting"
        and o.queue == t.queue
        and o.day == t.day
        and o.ticket_id != t.ticket_id
        and (not o.priority, o.issued_ms, o.number) < (not t.priority, t.issued_ms, t.number)
    )
    counters = day.counters.get(t.queue, set())
    open_counters = len(counters - day.paused) if counters else 1
    recent = recent_service_times_s(day.served.get(t.queue, []), now_ms)
    return Status(t, ticket_wait(ahead, recent, open_counters))


def read_day(session: Session, devices: Sequence[str], now_ms: int) -> Day:
    """The last day's queue events of ``devices``, replayed (a bad stored body is left out)."""
    rows = session.execute(
        select(EventRecord.device_id, EventRecord.ts_ms, EventRecord.type, EventRecord.body)
        .where(
            EventRecord.device_id.in_(tuple(devices)),
            EventRecord.type.in_(TYPES),
            EventRecord.ts_ms >= now_ms - DAY_MS,
        )
        .order_by(EventRecord.ts_ms, EventRecord.id)
    )
    events = []
    for device, ts, kind, body in rows:
        try:
            read = read_body(kind, body)
        except Refusal:
            continue
        if read is not None:
            events.append((device, ts, read))
    return replay(events)


class TicketStatuses:
    """Replays shared by concurrent requests: one per kiosk group every ``CACHE_S``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        peers: Callable[[str], Sequence[str]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.peers = peers  # a kiosk's office queue: its devices, itself included
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], tuple[float, Day]] = {}

    def status(self, kiosk: str, ticket_id: str, now_ms: int) -> Status | None:
        devices = tuple(sorted(set(self.peers(kiosk)) | {kiosk}))
        with self._lock:
            hit = self._cache.get(devices)
            if hit is None or self.monotonic() - hit[0] > CACHE_S:
                with self.sessions() as db:
                    hit = (self.monotonic(), read_day(db, devices, now_ms))
                self._cache = {
                    k: v for k, v in self._cache.items() if self.monotonic() - v[0] <= CACHE_S
                }
                self._cache[devices] = hit
        return status_of(hit[1], ticket_id, now_ms)


class ViewLimit:
    """Views of the status pages per caller's address in a sliding minute (this replica's).

    Kept in memory, not in the database as the booking attempts are: a phone reloads
    every 15 s and many phones share a carrier's address, so the limit is generous and
    a database write per view would be the page's whole cost.
    """

    def __init__(self, per_min: int) -> None:
        self.per_min = per_min
        self._lock = threading.Lock()
        self._seen: dict[str, list[int]] = {}

    def allow(self, ip: str, now_ms: int) -> bool:
        since = now_ms - 60_000
        with self._lock:
            if len(self._seen) > 50_000:  # a flood of addresses: forget the idle ones
                self._seen = {k: v for k, v in self._seen.items() if v and v[-1] >= since}
            views = [t for t in self._seen.get(ip, []) if t >= since]
            if len(views) >= self.per_min:
                self._seen[ip] = views
                return False
            views.append(now_ms)
            self._seen[ip] = views
            return True
