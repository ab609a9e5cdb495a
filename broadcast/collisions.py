"""Collisions on one loudspeaker: what plays, what waits, what is cut and what is missed.

Pure: no I/O and no clock; ``Schedule.plan``, the conflict preview, is built
on ``resolve``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from broadcast.levels import ignores_quiet_hours
from broadcast.quiet import QuietWindows
from broadcast.recurrence import MISSED_QUIET, Occurrence

DEFAULT_MAX_DELAY_MS = 10 * 60 * 1000
MISSED_LATE = "late"
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

    @property
    def delay_ms(self) -> int | None:
        return None if self.start_ms is None else self.start_ms - self.occurrence.start_ms


def resolve(
    occurrences: Sequence[Occurrence], quiet: QuietWindows, max_delay_ms: int = DEFAULT_MAX_DELAY_MS
) -> list[Slot]:
    """Play ``occurrences`` (sorted) on one loudspeaker; one slot each, in the same order.

    A higher priority cuts what plays at its start (the cut is recorded; whether
    the cut item resumes is the player's business). An equal or lower priority
    waits; when the loudspeaker is free the highest priority waiting plays
    first, then the earliest. One that would start more than ``max_delay_ms``
    late is missed as "late", and one whose delayed start falls in quiet hours
    is missed as "quiet_hours" unless it is an emergency.
    """
    slots: dict[str, Slot] = {}
    waiting: list[Occurrence] = []
    playing: tuple[Occurrence, int] | None = None  # and its actual start
    i = 0
    while i < len(occurrences) or playing is not None:
        # the next moment something happens: what plays ends (first, on a tie) or one arrives
        arrival = occurrences[i].start_ms if i < len(occurrences) else None
        if playing is not None and (arrival is None or _end(playing) <= arrival):
            now = _end(playing)
            slots[playing[0].key] = Slot(playing[0], "completed", playing[1], now)
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
            waiting.append(new)
            if playing is not None and new.priority > playing[0].priority:
                cut, playing = playing, None
        if playing is None:
            playing = _take_next(waiting, now, quiet, max_delay_ms, slots)
        if cut is not None:
            by = playing[0].key if playing else None
            slots[cut[0].key] = Slot(cut[0], "preempted", cut[1], now, preempted_by=by)
    return [slots[o.key] for o in occurrences]


def _end(playing: tuple[Occurrence, int]) -> int:
    return playing[1] + playing[0].duration_ms


def _take_next(
    waiting: list[Occurrence],
    now: int,
    quiet: QuietWindows,
    max_delay_ms: int,
    slots: dict[str, Slot],
) -> tuple[Occurrence, int] | None:
    while waiting:
        best = min(waiting, key=lambda o: (-o.priority, o.start_ms, o.key))
        waiting.remove(best)
        if now - best.start_ms > max_delay_ms:
            slots[best.key] = Slot(best, "missed", reason=MISSED_LATE)
        elif not ignores_quiet_hours(best.priority) and quiet.is_quiet(now):
            slots[best.key] = Slot(best, "missed", reason=MISSED_QUIET)
        else:
            return best, now
    return None
