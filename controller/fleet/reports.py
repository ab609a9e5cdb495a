"""Reports from stored events: proof of play and queue statistics (files: controller.web).

Query functions only (no HTTP). Events are filtered in SQL by type and time
(the event's own ``ts_ms``: when it happened on the device) and summed in
Python, because reading JSON bodies differs between SQLite and PostgreSQL and
a commune's month is a few hundred thousand events at most.

Event bodies are read as their models (protocol.events): ``play.finished``
(outcome, played_ms, resumes, a relay's gaps), ``play.interrupted`` (reason, played_ms),
``play.missed`` (reason), ``ticket.issued`` (service),
``ticket.called`` (counter, recall, waited_ms), ``ticket.served`` (counter,
service_ms), ``ticket.skipped`` (counter, reason), ``ticket.rated`` (counter,
level 1-5). Ingest stores only bodies that fit; a stored row that does not
(written before ingest checked) is logged and left out.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.fleet_tables import Device, DeviceGroup, EventRecord, Group
from controller.fleet.queries import in_commune
from protocol.errors import Refusal
from protocol.events import (
    Body,
    PlayFinished,
    PlayInterrupted,
    PlayMissed,
    TicketCalled,
    TicketIssued,
    TicketRated,
    TicketRecord,
    TicketServed,
    TicketSkipped,
    read_body,
)

log = logging.getLogger(__name__)

PLAY_TYPES = ("play.finished", "play.interrupted", "play.missed")
TICKET_TYPES = ("ticket.issued", "ticket.called", "ticket.served", "ticket.skipped", "ticket.rated")


@dataclass
class PlayRow:
    """Proof of play for one device or group over a period."""

    key: str  # device id, group id, or commune id ("": the province's own devices)
    commune: str | None = None  # the device's or group's commune; None: the province's
    plays: int = 0  # plays that reached the speaker (not failed); a resumed rest is not another
    completed: int = 0
    total_played_ms: int = 0
    missed: int = 0
    failed: int = 0
    missed_by_reason: dict[str, int] = field(default_factory=dict)
    # cut before their end, for good: preempted (not resumed), stopped, power_loss, crash, ...
    interrupted: int = 0
    interrupted_by_reason: dict[str, int] = field(default_factory=dict)
    interrupted_played_ms: int = 0  # what of them aired before the cut
    # stream relays: stretches that did not air the stream (a drop, dead air), and their length
    relay_gaps: int = 0
    relay_gap_ms: int = 0


def proof_of_play(
    session: Session,
    start_ms: int,
    end_ms: int,
    by: Literal["device", "group", "commune"] = "device",
    commune: str | None = None,
) -> list[PlayRow]:
    """Plays, their total duration, missed and failed, per device, group or commune in
    [start, end); ``commune``: of its speakers only (None: every speaker, the province's
    view)."""
    groups_of = groups_by_device(session, commune) if by == "group" else {}
    group_commune: dict[str, str | None] = {}
    if by == "group":
        group_commune = {g: c for g, c in session.execute(select(Group.id, Group.commune))}
    commune_of = communes_of_devices(session, commune)
    rows: dict[str, PlayRow] = {}
    for e, body in events(session, PLAY_TYPES, start_ms, end_ms, commune=commune):
        home = commune_of.get(e.device_id)
        if by == "device":
            keys = [(e.device_id, home)]
        elif by == "group":  # a group's commune is its own ("all": the province's)
            keys = [(g, group_commune.get(g)) for g in groups_of.get(e.device_id, [])]
        else:
            keys = [(home or "", home)]
        for key, where in keys:
            _count_play(rows.setdefault(key, PlayRow(key, commune=where)), body)
    return [rows[k] for k in sorted(rows)]


def communes_of_devices(
    session: Session, commune: str | None = None, devices: Collection[str] | None = None
) -> dict[str, str]:
    """Each device of a commune, to its commune (the province's devices are left out);
    ``commune``, ``devices``: of those devices only."""
    query = select(Device.id, Device.commune).where(Device.commune.is_not(None))
    if commune is not None:
        query = query.where(Device.commune == commune)
    if devices is not None:
        query = query.where(Device.id.in_(tuple(devices)))
    return {device: home for device, home in session.execute(query) if home}


def _count_play(row: PlayRow, body: Body | None) -> None:
    """One record of a play's end; a preempted play that resumes ends with its rest."""
    if isinstance(body, PlayFinished) and body.gaps:
        row.relay_gaps += len(body.gaps)
        row.relay_gap_ms += sum(g.length_ms for g in body.gaps)
    if isinstance(body, PlayMissed):
        row.missed += 1
        row.missed_by_reason[body.reason] = row.missed_by_reason.get(body.reason, 0) + 1
    elif isinstance(body, PlayFinished) and body.outcome == "failed":
        row.failed += 1
    elif isinstance(body, PlayFinished | PlayInterrupted):
        row.plays += body.resumed_from_ms == 0 and body.actual_ms is not None
        row.total_played_ms += body.played_ms
        if isinstance(body, PlayInterrupted):
            cut: str | None = body.reason
        else:
            row.completed += body.outcome == "completed"
            cut = None if body.outcome == "completed" or body.resumes else body.outcome
        if cut is not None:
            row.interrupted += 1
            row.interrupted_by_reason[cut] = row.interrupted_by_reason.get(cut, 0) + 1
            row.interrupted_played_ms += body.resumed_from_ms + body.played_ms


@dataclass
class QueueRow:
    """Queue statistics for one service or one counter over a period."""

    key: str  # service code, or counter number
    issued: int = 0
    called: int = 0  # first calls (recalls not counted)
    served: int = 0
    no_shows: int = 0
    avg_wait_s: float | None = None
    max_wait_s: float | None = None
    avg_service_s: float | None = None
    ratings: int = 0
    avg_rating: float | None = None
    ratings_by_level: dict[int, int] = field(default_factory=dict)


def queue_stats(
    session: Session,
    start_ms: int,
    end_ms: int,
    by: Literal["service", "counter", "officer", "booking"] = "service",
    *,
    device: str | None = None,
    commune: str | None = None,
) -> list[QueueRow]:
    """Tickets, waiting and service times, no-shows and ratings, per service or counter.

    By booking: "booked" (a citizen who booked ahead: ``ticket.issued`` carries the slot)
    against "walk_in"; a ticket issued before the period counts as a walk-in.

    Issued tickets have no counter yet: by counter, ``issued`` stays 0. By officer:
    the officer signed in at the counter who called, served or skipped, and the one
    who served the citizen a rating is for; records made with no sign-in are left out.
    """
    acc: dict[str, _QueueAcc] = {}
    found = events(session, TICKET_TYPES, start_ms, end_ms, device=device, commune=commune)
    booked = {
        b.ticket_id
        for _e, b in found
        if isinstance(b, TicketIssued) and b.booked_slot_ms is not None
    }
    for _e, body in found:
        if not isinstance(body, TicketRecord):
            continue
        if by == "booking":
            raw: object = "booked" if body.ticket_id in booked else "walk_in"
        else:
            raw = body.service if by == "service" else getattr(body, by, None)
        if raw is None:
            continue
        acc.setdefault(str(raw), _QueueAcc()).add(body)
    return [acc[k].row(k) for k in sorted(acc, key=_natural)]


@dataclass
class _QueueAcc:
    counts: Counter[str] = field(default_factory=Counter)
    waits_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)
    levels: Counter[int] = field(default_factory=Counter)

    def add(self, body: Body) -> None:
        if isinstance(body, TicketCalled):
            if body.recall:
                return
            self.waits_s.append(body.waited_ms / 1000)
        elif isinstance(body, TicketServed):
            self.service_s.append(body.service_ms / 1000)
        elif isinstance(body, TicketSkipped) and body.reason != "no_show":
            return
        elif isinstance(body, TicketRated):
            self.levels[body.level] += 1
        self.counts[body.TYPE] += 1

    def row(self, key: str) -> QueueRow:
        ratings = sum(self.levels.values())
        return QueueRow(
            key=key,
            issued=self.counts["ticket.issued"],
            called=self.counts["ticket.called"],
            served=self.counts["ticket.served"],
            no_shows=self.counts["ticket.skipped"],
            avg_wait_s=_mean(self.waits_s),
            max_wait_s=max(self.waits_s) if self.waits_s else None,
            avg_service_s=_mean(self.service_s),
            ratings=ratings,
            avg_rating=(
                round(sum(k * n for k, n in self.levels.items()) / ratings, 2) if ratings else None
            ),
            ratings_by_level=dict(sorted(self.levels.items())),
        )


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _natural(key: str) -> tuple[int, str]:
    """Counters sort as numbers (2 before 10), services as text."""
    return (int(key), "") if key.isdigit() else (1 << 30, key)


def groups_by_device(
    session: Session, commune: str | None = None, devices: Collection[str] | None = None
) -> dict[str, list[str]]:
    """Each device's groups; ``commune``, ``devices``: of those devices only."""
    query = select(DeviceGroup.device_id, DeviceGroup.group_id)
    if commune is not None:
        query = query.where(DeviceGroup.device_id.in_(in_commune(commune)))
    if devices is not None:
        query = query.where(DeviceGroup.device_id.in_(tuple(devices)))
    groups_of: dict[str, list[str]] = defaultdict(list)
    for device, group in session.execute(query):
        groups_of[device].append(group)
    return groups_of


def events(
    session: Session,
    types: Iterable[str],
    start_ms: int,
    end_ms: int,
    *,
    device: str | None = None,
    commune: str | None = None,
    devices: Collection[str] | None = None,
) -> list[tuple[EventRecord, Body | None]]:
    """The events of ``types`` in [start, end), each with its body read as its model;
    ``commune``: of its devices only, filtered in SQL (devices.commune is indexed);
    ``devices``: of those only (a page of them)."""
    query = select(EventRecord).where(
        EventRecord.type.in_(tuple(types)),
        EventRecord.ts_ms >= start_ms,
        EventRecord.ts_ms < end_ms,
    )
    if device is not None:
        query = query.where(EventRecord.device_id == device)
    if commune is not None:
        query = query.where(EventRecord.device_id.in_(in_commune(commune)))
    if devices is not None:
        query = query.where(EventRecord.device_id.in_(tuple(devices)))
    read = []
    for e in session.scalars(query.order_by(EventRecord.ts_ms, EventRecord.id)):
        try:
            read.append((e, read_body(e.type, e.body)))
        except Refusal as exc:
            log.warning("event %s of %s left out of a report: %s", e.event_id, e.device_id, exc)
    return read
