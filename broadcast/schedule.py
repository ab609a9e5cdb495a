"""What plays when, from the schedule documents a device holds.

Pure: no I/O and no clock. Every instant is passed in as epoch milliseconds
(UTC), so the edge, the controller's conflict preview and the tests ask the same
questions of the same code. The rules it settles, beyond docs/protocol.md:

- **Merge.** A device plays the items of its own document
  (``{root}/dev/{id}/schedule``) and of its groups' documents
  (``{root}/grp/{group}/schedule``) together. An item id plays once: the
  device's own item replaces a group item with the same id (the way to move or
  drop a village bulletin on one loudspeaker), and between two groups the
  document whose topic sorts first wins.
- **Recurrence** and **quiet hours**: broadcast.recurrence expands each
  item on its document's wall clock and marks what quiet hours block.
- **Collisions** (``Schedule.plan``): see broadcast.collisions.resolve.
- **Local rules** (broadcast.local_rules.BroadcastRules): limits a commune sets,
  checked on a plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from broadcast.audio.lateness import FULL_GRACE_MS
from broadcast.collisions import Slot, resolve
from broadcast.quiet import QuietWindows
from broadcast.recurrence import MAX_MS, ItemOccurrences, Occurrence
from protocol.commands import DEFAULT_TZ, QuietHours, ScheduleItem, ScheduleSet

_DAY_MS = 86_400_000


def _order(occurrence: Occurrence) -> tuple[int, int, str]:
    return (occurrence.start_ms, -occurrence.priority, occurrence.key)


def _is_own(source: str) -> bool:
    parts = source.split("/")
    if len(parts) < 4 or parts[-1] != "schedule" or parts[-3] not in ("dev", "grp"):
        raise ValueError(f"{source!r} is not a schedule topic like xaso/dev/loa-1/schedule")
    return parts[-3] == "dev"


def merge(docs: Iterable[tuple[str, ScheduleSet]]) -> list[tuple[str, str, ScheduleItem]]:
    """(source, tz, item) for every item that plays: own items first, then groups by topic."""
    chosen: dict[str, tuple[str, str, ScheduleItem]] = {}
    for source, doc in sorted(docs, key=lambda pair: (not _is_own(pair[0]), pair[0])):
        for item in doc.items:
            chosen.setdefault(item.id, (source, doc.tz, item))
    return list(chosen.values())


class Schedule:
    """The merged schedule of one device: build it again when a document or the config changes.

    It keeps each item's occurrences as they are asked for, so asking again is
    cheap; it is not safe to share between threads.
    """

    def __init__(self, items: Sequence[ItemOccurrences], quiet: QuietWindows) -> None:
        self._items = tuple(items)
        self.quiet = quiet
        self._longest_ms = max((item.duration_ms for item in items), default=0)

    @classmethod
    def build(
        cls,
        docs: Iterable[tuple[str, ScheduleSet]],
        quiet_hours: Iterable[QuietHours] = (),
        quiet_tz: str = DEFAULT_TZ,
    ) -> Schedule:
        """``docs``: (topic, document) pairs; quiet hours and their tz come from ConfigSet."""
        quiet = QuietWindows.from_config(quiet_hours, quiet_tz)
        items = [ItemOccurrences(source, tz, item, quiet) for source, tz, item in merge(docs)]
        return cls(items, quiet)

    def is_quiet(self, at_ms: int) -> bool:
        return self.quiet.is_quiet(at_ms)

    def occurrences(self, start_ms: int, end_ms: int) -> list[Occurrence]:
        """Every occurrence starting in [start_ms, end_ms), by start, priority (high first), key."""
        found = [o for item in self._items for o in item.between(start_ms, end_ms)]
        return sorted(found, key=_order)

    def next_after(self, now_ms: int) -> Occurrence | None:
        """The first occurrence starting after ``now_ms``, blocked or not."""
        start, span = now_ms + 1, _DAY_MS
        while start <= MAX_MS:
            found = self.occurrences(start, start + span)
            if found:
                return found[0]
            if all(item.done_before(start + span) for item in self._items):
                return None
            start, span = start + span, span * 4
        return None

    def upcoming(self, now_ms: int, horizon_ms: int) -> list[Occurrence]:
        """Occurrences playing at some time in [now, now + horizon), those under way included.

        What the edge prefetches clips for and switches the amplifier on for,
        leaving out the ``blocked`` ones (which it records as missed).
        """
        found = self.occurrences(now_ms - self._longest_ms, now_ms + horizon_ms)
        return [o for o in found if o.end_ms > now_ms]

    def plan(self, start_ms: int, end_ms: int) -> list[Slot]:
        """The conflict preview: a slot for each occurrence starting in [start_ms, end_ms),
        and for those started earlier and still playing at ``start_ms``.

        Occurrences from the longest item's length (plus the late grace: none
        plays later than that past its planned end, broadcast.audio.lateness) before
        the window to the longest item's length after it take part, so that
        what plays across either edge is resolved as it will be.
        """
        reach = self._longest_ms + FULL_GRACE_MS
        slots = resolve(self.occurrences(start_ms - reach, end_ms + self._longest_ms), self.quiet)
        return [s for s in slots if _shows_in(s, start_ms, end_ms)]


def _shows_in(slot: Slot, start_ms: int, end_ms: int) -> bool:
    """Starts in the window, or started before it and still plays at its start."""
    if slot.occurrence.start_ms >= end_ms:
        return False
    if slot.occurrence.start_ms >= start_ms:
        return True
    end = slot.last_end_ms
    return end is not None and end > start_ms
