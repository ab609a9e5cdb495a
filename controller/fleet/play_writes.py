"""Ingest's side of the play log: each play's records folded into ``plays`` in the
transaction that stores them (controller/fleet/ingest_writes.py), and the one-time
fold of a database that had only the events (migration fleet_0009_plays).

A play's first records make its row; a later one (a resumed rest, a
``play.interrupted`` told at the next boot, an outbox's late delivery) folds the
play again from all its stored records, found by its device and the span of
their ``ts_ms``. Its row is locked first (``FOR UPDATE``), in one key order for
every replica, so two replicas storing records of one play at once fold it one
after the other, the second seeing the first's records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import Connection, TableClause, select, update
from sqlalchemy.orm import Session

from controller.db.fleet_tables import EventRecord, PlayFold, dialect_insert
from controller.fleet.play_rules import fold
from controller.fleet.reports import PLAY_TYPES
from protocol.errors import ProtocolError
from protocol.events import PlayRecord, read_body

BACKFILL_DEVICES = 200  # devices folded per insert by the migration


class Record(NamedTuple):
    """One play record as stored: ``row`` (the event's row id) orders those of one ms."""

    ts_ms: int
    row: int
    body: PlayRecord


class Stored(NamedTuple):
    """An event just stored: its device, row id, ts, type and body."""

    device: str
    row: int
    ts_ms: int
    type: str
    body: Any


def fold_stored(session: Session, stored: Iterable[Stored]) -> int:
    """Fold the play records among events just stored (duplicates left out by the
    caller) into their plays' rows; returns how many plays were written."""
    new: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for e in stored:
        record = _record(e.type, e.body)
        if record is not None:
            new[(e.device, record.key)].append(Record(e.ts_ms, e.row, record))
    if not new:
        return 0
    keys = sorted(new)  # one lock order for every replica
    rows = [play_row(d, k, sorted(new[(d, k)])) for d, k in keys]
    stmt = (
        dialect_insert(session, PlayFold)
        .on_conflict_do_nothing(index_elements=["device_id", "key"])
        .returning(PlayFold.device_id, PlayFold.key)
    )
    made = {(r.device_id, r.key) for r in session.execute(stmt, rows)}
    for device, key in keys:
        if (device, key) not in made:  # its earlier records made it: fold them all again
            _refold(session, device, key, [r.ts_ms for r in new[(device, key)]])
    return len(keys)


def _refold(session: Session, device: str, key: str, new_ts: list[int]) -> None:
    held = session.execute(
        select(PlayFold.first_ts_ms, PlayFold.last_ts_ms)
        .where(PlayFold.device_id == device, PlayFold.key == key)
        .with_for_update()
    ).one()
    lo, hi = min(held.first_ts_ms, *new_ts), max(held.last_ts_ms, *new_ts)
    found = session.execute(
        select(EventRecord.id, EventRecord.ts_ms, EventRecord.type, EventRecord.body)
        .where(
            EventRecord.device_id == device,
            EventRecord.type.in_(PLAY_TYPES),
            EventRecord.ts_ms >= lo,
            EventRecord.ts_ms <= hi,
        )
        .order_by(EventRecord.ts_ms, EventRecord.id)
    )
    records = _records_of(found, key)
    values = play_row(device, key, records)
    session.execute(
        update(PlayFold)
        .where(PlayFold.device_id == device, PlayFold.key == key)
        .values({k: v for k, v in values.items() if k not in ("device_id", "key")})
    )


def _records_of(found: Iterable[Any], key: str | None = None) -> list[Record]:
    """The play records among a device's (id, ts_ms, type, body) rows; ``key``: of
    that play only."""
    records = []
    for row, ts_ms, type_, body in found:
        if key is None or (isinstance(body, dict) and body.get("key") == key):
            record = _record(type_, body)
            if record is not None:
                records.append(Record(ts_ms, row, record))
    return records


def _record(type_: str, body: Any) -> PlayRecord | None:
    """A play record's body as its model; None for another type, or one that does not
    fit (stored before ingest checked: the log leaves it out, as the reports do)."""
    if type_ not in PLAY_TYPES:
        return None
    try:
        record = read_body(type_, body)
    except ProtocolError:
        return None
    return record if isinstance(record, PlayRecord) else None


def play_row(device: str, key: str, records: list[Record]) -> dict[str, Any]:
    """The ``plays`` row of one play from its records, in the order they were made."""
    folded = fold([r.body for r in records])
    return {
        "device_id": device,
        "key": key,
        "placed_ms": folded.placed(records[0].ts_ms),
        "order_ms": folded.order_ms,
        "first_ts_ms": records[0].ts_ms,
        "last_ts_ms": records[-1].ts_ms,
        **vars(folded),
    }


def backfill(connection: Connection, events: TableClause, plays: TableClause) -> int:
    """Fold every stored play record into ``plays``, a device at a time (the migration's
    own tables: what they are at that revision); returns how many plays were written."""
    devices = connection.scalars(
        select(events.c.device_id).where(events.c.type.in_(PLAY_TYPES)).distinct()
    ).all()
    written = 0
    for start in range(0, len(devices), BACKFILL_DEVICES):
        rows = []
        for device in devices[start : start + BACKFILL_DEVICES]:
            found = connection.execute(
                select(events.c.id, events.c.ts_ms, events.c.type, events.c.body)
                .where(events.c.device_id == device, events.c.type.in_(PLAY_TYPES))
                .order_by(events.c.ts_ms, events.c.id)
            )
            by_key: dict[str, list[Record]] = defaultdict(list)
            for record in _records_of(found):
                by_key[record.body.key].append(record)
            rows += [play_row(device, key, records) for key, records in sorted(by_key.items())]
        if rows:
            connection.execute(plays.insert(), rows)
            written += len(rows)
    return written
