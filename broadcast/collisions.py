"""Collisions on one loudspeaker: what plays, what waits, what is cut and what is missed.

Pure: no I/O and no clock; ``Schedule.plan``, the conflict preview, is built
on ``resolve``. What waits and starts late follows broadcast.audio.lateness, the
rule the player follows too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from broadcast.audio.lateness import MISSED_LATE, join
from broadcast.levels import ignores_quiet_hours
from broadcast.quiet import QuietWindows
from broadcast.recurrence import MISSED_QUIET, Occurrence

Outcome = Literal["completed", "preempted", "missed"]


@dataclass(frozen=True)
class Slot:
    """What the player does with one occurrence, once collisions are resolved."""

    occurrence: Occurrence
    outcome: Outcome
    start_ms: int | None = None  # actual start; None when missed
    end_ms: int | None = None  # actual end: the cut when preempted
    reason: str | None = None  # why missed: MISSED_QUIET or MISSED_LATE
    preempted_by: str | None = None  # key of the occurrence that cut it
    offset_ms: int = (
        0  # joined late: how much of its beginning is skipped (broadcast.audio.lateness)
    )
    # a cut item's rest, played once the loudspeaker is free again: (start, end) of each
    # part (a rest cut again resumes again), as the player does with resume_preempted
    rests: tuple[tuple[int, int], ...] = ()

    @property
    def delay_ms(self) -> int | None:
        return None if self.start_ms is None else self.start_ms - self.occurrence.start_ms

    @property
    def shortened(self) -> bool:
        return self.offset_ms > 0

    @property
    def last_end_ms(self) -> int | None:
        """When the loudspeaker is done with it: its end, or its last rest's."""
        return self.rests[-1][1] if self.rests else self.end_ms


@dataclass(frozen=True)
class _Playing:
    occurrence: Occurrence
    start_ms: int
    offset_ms: int
    rest_ms: int | None = None  # a resumed rest: this much is left to play

    @property
    def end_ms(self) -> int:
        if self.rest_ms is not None:
            return self.start_ms + self.rest_ms
        return self.start_ms + self.occurrence.duration_ms - self.offset_ms

    def slot(self, outcome: Outcome, end_ms: int, by: str | None = None) -> Slot:
        return Slot(self.occurrence, outcome, self.start_ms, end_ms, None, by, self.offset_ms)


@dataclass(frozen=True)
class _Waiting:
    occurrence: Occurrence
    rest_ms: int | None = None  # the rest of a cut item: never late, never held by quiet hours


def resolve(
    occurrences: Sequence[Occurrence], quiet: QuietWindows, *, resume: bool = True
) -> list[Slot]:
    """Play ``occurrences`` (sorted) on one loudspeaker; one slot each, in the same order.

    A higher priority cuts what plays at its start (the cut is recorded). With
    ``resume`` (the speaker's ``resume_preempted``, on by default) the cut
    item's rest waits in its place and plays, never late and whatever the
    hour, once the loudspeaker is free, as broadcast.audio.preemption has the
    player do. An equal or lower priority waits; when the loudspeaker is free
    the highest priority waiting plays first, then the earliest, as
    broadcast.audio.lateness.join says: in full, joined late (ending at its
    planned end) or missed as "late". One whose delayed start falls in quiet
    hours is missed as "quiet_hours" unless it is an emergency.
    """
    slots: dict[str, Slot] = {}
    waiting: list[_Waiting] = []
    playing: _Playing | None = None
    i = 0
    while i < len(occurrences) or playing is not None:
        # the next moment something happens: what plays ends (first, on a tie) or one arrives
        arrival = occurrences[i].start_ms if i < len(occurrences) else None
        if playing is not None and (arrival is None or playing.end_ms <= arrival):
            now = playing.end_ms
            _record(slots, playing, "completed", now)
            playing = None
        else:
            assert arrival is not None
            now = arrival
        cut = None
        while i < len(occurrences) and occurrences[i].start_ms == now:
            new = occurrences[i]
            i += 1
            if new.blocked:
                slots[new.key] = Slot(new, "missed", reason=new.blocked)
                continue
            waiting.append(_Waiting(new))
            if playing is not None and new.priority > playing.occurrence.priority:
                cut, playing = playing, None
        if cut is not None and resume and cut.end_ms > now:
            waiting.append(_Waiting(cut.occurrence, cut.end_ms - now))
        if playing is None:
            playing = _take_next(waiting, now, quiet, slots)
        if cut is not None:
            by = playing.occurrence.key if playing else None
            _record(slots, cut, "preempted", now, by)
    return [slots[o.key] for o in occurrences]


def _record(
    slots: dict[str, Slot], played: _Playing, outcome: Outcome, end_ms: int, by: str | None = None
) -> None:
    """The slot of what stopped playing at ``end_ms``; a rest adds its part to the cut slot."""
    if played.rest_ms is None:
        slots[played.occurrence.key] = played.slot(outcome, end_ms, by)
        return
    cut = slots[played.occurrence.key]
    slots[played.occurrence.key] = replace(cut, rests=(*cut.rests, (played.start_ms, end_ms)))


def _take_next(
    waiting: list[_Waiting], now: int, quiet: QuietWindows, slots: dict[str, Slot]
) -> _Playing | None:
    while waiting:
        best = min(
            waiting, key=lambda w: (-w.occurrence.priority, w.occurrence.start_ms, w.occurrence.key)
        )
        waiting.remove(best)
        o = best.occurrence
        if best.rest_ms is not None:
            return _Playing(o, now, 0, best.rest_ms)
        joined = join(o.start_ms, o.duration_ms, now)
        if joined.start_ms is None:
            slots[o.key] = Slot(o, "missed", reason=MISSED_LATE)
        elif not ignores_quiet_hours(o.priority) and quiet.is_quiet(now):
            slots[o.key] = Slot(o, "missed", reason=MISSED_QUIET)
        else:
            return _Playing(o, joined.start_ms, joined.offset_ms)
    return None
