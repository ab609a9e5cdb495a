"""Pure rules of proof of play per bulletin: one play's records folded into what aired.

No I/O: ingest folds a play's records as they come (controller/fleet/play_writes.py)
and the play log reads what it stored (controller/fleet/play_log.py). A play is the
records of one request on one device (``key``: the command id, or the schedule
occurrence): a preempted play that resumed is one play, its parts added up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from protocol.events import Body, PlayFinished, PlayInterrupted, PlayMissed, PlayRecord

Result = Literal["completed", "cut", "missed", "failed"]


@dataclass(frozen=True)
class Folded:
    """What one play's records say, whatever its cluster's groups and commune."""

    label: str
    item_id: str | None
    priority: int | None
    planned_ms: int | None
    actual_ms: int | None  # when its first sample aired; None if it never did
    played_ms: int  # what aired, all parts
    result: Result
    reason: str  # why it was cut, missed or failed ("" when completed)
    # a stream relay: what of the stream itself aired, and the stretches that did not
    relayed_ms: int | None  # None: not a relay (or a speaker too old to say)
    gaps: int
    gap_ms: int

    def placed(self, first_ts_ms: int) -> int:
        """Where the log selects it: its planned start, else its first record's ts."""
        return self.planned_ms if self.planned_ms is not None else first_ts_ms

    @property
    def order_ms(self) -> int:
        """Where the log orders it: its planned start, else its first sample, else 0."""
        return self.planned_ms or self.actual_ms or 0


def fold(records: Sequence[PlayRecord]) -> Folded:
    """One play from its records, in the order they were made (ts, then as stored)."""
    last = records[-1]
    played = sum(_played(b) for b in records)
    starts = [b.actual_ms for b in records if isinstance(b, PlayFinished | PlayInterrupted)]
    actual = min((ms for ms in starts if ms is not None), default=None)
    result, reason = _result(last, played)
    relayed, gaps, gap_ms = _relay(records)
    return Folded(
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
    )


def _relay(records: Sequence[PlayRecord]) -> tuple[int | None, int, int]:
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
