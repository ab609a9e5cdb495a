"""Proof of play per bulletin: one row for each play on each cluster, as it happened.

What an officer shows upward: that bulletin X aired on cluster Y at 06:30 on
3 December, for how long, or that it was cut or missed and why. A play is the
records of one request on one device (``key``: the command id, or the schedule
occurrence): a preempted play that resumed is one row, its parts added up.
``reports.proof_of_play`` gives the totals of the same records.

Rows are selected by their planned start (what the officer asks about); a play
with no planned start in its records is placed by its first record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from controller.fleet.reports import PLAY_TYPES, communes_of_devices, events, groups_by_device
from protocol.events import Body, PlayFinished, PlayInterrupted, PlayMissed, PlayRecord

Result = Literal["completed", "cut", "missed", "failed"]
# records of one play may come a while after its planned start (a resumed rest, a
# play.interrupted told at the next boot): look this far past the period for them
LATE_RECORDS_MS = 24 * 3_600_000


@dataclass(frozen=True)
class PlayLogRow:
    device_id: str
    groups: tuple[str, ...]
    key: str
    label: str
    item_id: str | None
    priority: int | None
    planned_ms: int | None
    actual_ms: int | None  # when its first sample aired; None if it never did
    played_ms: int  # what aired, all parts
    result: Result
    reason: str  # why it was cut, missed or failed ("" when completed)
    # a stream relay: what of the stream itself aired, and the stretches that did not
    relayed_ms: int | None = None  # None: not a relay (or a speaker too old to say)
    gaps: int = 0
    gap_ms: int = 0
    commune: str | None = None  # the cluster's commune; None: the province's


def play_log(
    session: Session,
    start_ms: int,
    end_ms: int,
    device: str | None = None,
    *,
    commune: str | None = None,
    devices: Collection[str] | None = None,
) -> list[PlayLogRow]:
    """Each play planned in [start, end), in order of its planned start, then cluster;
    ``commune``: on its speakers only (None: every speaker, the province's view);
    ``devices``: on those only (the calendar's page of speakers)."""
    groups_of = groups_by_device(session, commune, devices)
    commune_of = communes_of_devices(session, commune, devices)
    parts: dict[tuple[str, str], list[PlayRecord]] = defaultdict(list)
    first_ts: dict[tuple[str, str], int] = {}
    late = end_ms + LATE_RECORDS_MS
    for e, body in events(
        session, PLAY_TYPES, start_ms, late, device=device, commune=commune, devices=devices
    ):
        if isinstance(body, PlayRecord):
            parts[(e.device_id, body.key)].append(body)
            first_ts.setdefault((e.device_id, body.key), e.ts_ms)
    rows = []
    for (device_id, key), records in parts.items():
        groups = tuple(sorted(groups_of.get(device_id, ())))
        row = _fold(device_id, groups, key, records, commune_of.get(device_id))
        placed = row.planned_ms if row.planned_ms is not None else first_ts[(device_id, key)]
        if start_ms <= placed < end_ms:
            rows.append(row)
    rows.sort(key=lambda r: (r.planned_ms or r.actual_ms or 0, r.device_id, r.key))
    return rows


def _fold(
    device_id: str,
    groups: tuple[str, ...],
    key: str,
    records: list[PlayRecord],
    commune: str | None,
) -> PlayLogRow:
    """One play from its records, in the order they were made."""
    last = records[-1]
    played = sum(_played(b) for b in records)
    starts = [b.actual_ms for b in records if isinstance(b, PlayFinished | PlayInterrupted)]
    actual = min((ms for ms in starts if ms is not None), default=None)
    result, reason = _result(last, played)
    relayed, gaps, gap_ms = _relay(records)
    return PlayLogRow(
        device_id=device_id,
        groups=groups,
        key=key,
        label=next((b.label for b in records if b.label), ""),
        item_id=next((b.item_id for b in records if b.item_id), None),
        priority=next((b.priority for b in records if b.priority is not None), None),
        planned_ms=next((b.planned_ms for b in records if b.planned_ms is not None), None),
        actual_ms=actual if played else None,
        played_ms=played,
        result=result,
        reason=reason,
        relayed_ms=relayed,
        gaps=gaps,
        gap_ms=gap_ms,
        commune=commune,
    )


def _relay(records: list[PlayRecord]) -> tuple[int | None, int, int]:
    """A relay's account over its parts (a preempted relay that resumed is one play):
    what of the stream aired, how many gaps and their length; None if not a relay."""
    finished = [b for b in records if isinstance(b, PlayFinished) and b.relayed_ms is not None]
    if not finished:
        return None, 0, 0
    gaps = [g for b in finished for g in b.gaps]
    relayed = round(sum(b.relayed_ms or 0 for b in finished))
    return relayed, len(gaps), sum(g.length_ms for g in gaps)


def _played(body: Body) -> int:
    return body.played_ms if isinstance(body, PlayFinished | PlayInterrupted) else 0


def _result(last: PlayRecord, played_ms: int) -> tuple[Result, str]:
    if isinstance(last, PlayMissed):
        return ("cut" if played_ms else "missed"), last.reason
    if isinstance(last, PlayInterrupted):
        return "cut", last.reason
    assert isinstance(last, PlayFinished)
    if last.outcome == "completed":
        return "completed", ""
    if last.outcome == "failed":
        return "failed", "failed"
    return "cut", last.outcome  # preempted (its rest not yet told) or stopped
