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
- **Recurrence.** RFC 5545 through dateutil, on the wall clock of the
  document's ``tz``; ``dtstart``, ``until`` (inclusive) and ``exdates`` (exact
  local date-times) are local. A local time that does not exist (spring
  forward) is read with the offset before the gap, so a 02:30 item plays at
  03:30; one that happens twice (fall back) is the first of the two (fold=0).
  Both are RFC 5545, section 3.3.5. Keys keep the nominal local time:
  ``"bulletin@2027-03-28T02:30:00"``.
- **Quiet hours** (broadcast.quiet) block every occurrence that is not an
  emergency and starts inside them; it is returned marked ``blocked``, so that
  the edge records it as ``play.missed`` instead of dropping it silently.
- **Collisions** (``Schedule.plan``): see ``resolve``.
- **Local rules** (``BroadcastRules``): limits a commune sets, checked on a plan.

A rule that never matches (February 30th) yields nothing, but dateutil looks
for a match up to year 9999 first: about a second for a yearly or monthly rule
and twenty for a daily one on a PC, the first time a ``Schedule`` is asked
(and again only if asked about an earlier time). Such rules are best refused
where documents are written.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from broadcast.audio.request import PlayRequest
from broadcast.levels import Level, ignores_quiet_hours, level_of
from broadcast.quiet import QuietWindows
from protocol.commands import DEFAULT_TZ, ClipRef, QuietHours, ScheduleItem, ScheduleSet, StreamRef

DEFAULT_MAX_DELAY_MS = 10 * 60 * 1000
MISSED_QUIET = "quiet_hours"
MISSED_LATE = "late"
Outcome = Literal["completed", "preempted", "missed"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_DAY = timedelta(days=1)
_DAY_MS = 86_400_000
# the span datetime can hold, a day in from each end so that a margin still fits
_MIN_MS = (datetime(1, 1, 2) - _NAIVE_EPOCH) // timedelta(milliseconds=1)
_MAX_MS = (datetime(9999, 12, 30) - _NAIVE_EPOCH) // timedelta(milliseconds=1)


def _naive_utc(ms: int) -> datetime:
    return _NAIVE_EPOCH + timedelta(milliseconds=min(max(ms, _MIN_MS), _MAX_MS))


def _epoch_ms(local: datetime, tz: ZoneInfo) -> int:
    """fold=0 (replace's default) gives RFC 5545's reading of gaps and repeated hours."""
    return (local.replace(tzinfo=tz) - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Occurrence:
    key: str  # "<item id>@<nominal local start, ISO>": unique in a Schedule
    item_id: str
    source: str  # the topic of the document the item came from
    start_ms: int
    end_ms: int
    priority: int
    gain_db: float
    label: str
    clip: ClipRef | None
    stream: StreamRef | None
    local_start: str
    lang: str = "vi"
    blocked: str | None = None  # why it will not play: MISSED_QUIET

    @property
    def level(self) -> Level:
        return level_of(self.priority)

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    def play_request(self, clip_path: Path | None = None) -> PlayRequest:
        """The player's request; ``clip_path`` is the clip's file in the cache (clips only)."""
        if self.clip is not None and clip_path is None:
            raise ValueError(f"{self.key} plays clip {self.clip.sha256}: give its cached path")
        return PlayRequest(
            key=self.key,
            origin="schedule",
            priority=self.priority,
            duration_ms=self.duration_ms,
            clip_path=clip_path if self.clip is not None else None,
            stream_url=self.stream.url if self.stream is not None else None,
            gain_db=self.gain_db,
            at_ms=self.start_ms,
            label=self.label,
            item_id=self.item_id,
            occurrence=self.local_start,
        )


def _order(occurrence: Occurrence) -> tuple[int, int, str]:
    return (occurrence.start_ms, -occurrence.priority, occurrence.key)


def _duration_ms(item: ScheduleItem) -> int:
    if item.clip is not None:
        return item.clip.duration_ms
    assert item.stream is not None  # the schema wants exactly one of them
    return item.stream.duration_s * 1000


_FIXED_PERIODS = {
    "WEEKLY": timedelta(weeks=1),
    "DAILY": timedelta(days=1),
    "HOURLY": timedelta(hours=1),
    "MINUTELY": timedelta(minutes=1),
    "SECONDLY": timedelta(seconds=1),
}
_MONTH_PERIODS = {"YEARLY": 12, "MONTHLY": 1}


def _add_months(moment: datetime, months: int) -> datetime:
    year, month = divmod(moment.month - 1 + months, 12)
    return moment.replace(year=moment.year + year, month=month + 1)


def _anchor(rule: str, dtstart: datetime, low: datetime) -> datetime:
    """The latest start at or before ``low`` from which ``rule`` plays as it does from dtstart.

    dtstart moved by whole periods of the rule (INTERVAL times FREQ) keeps every
    later occurrence and every default dateutil takes from it (the time of day,
    the weekday, the day of the month), so iteration can begin near ``low``.
    Not with COUNT, which counts from dtstart, nor for a monthly or yearly rule
    from a day past the 28th, which not every month has.
    """
    parts = dict(part.split("=", 1) for part in rule.upper().split(";") if "=" in part)
    if low <= dtstart or "COUNT" in parts:
        return dtstart
    interval = int(parts.get("INTERVAL", "1"))
    freq = parts.get("FREQ", "")
    if freq in _FIXED_PERIODS:
        period = _FIXED_PERIODS[freq] * interval
        return dtstart + (low - dtstart) // period * period
    if freq in _MONTH_PERIODS and dtstart.day <= 28:
        months = _MONTH_PERIODS[freq] * interval
        elapsed = (low.year - dtstart.year) * 12 + low.month - dtstart.month
        shift = elapsed // months * months
        anchor = _add_months(dtstart, shift)
        return anchor if anchor <= low else _add_months(dtstart, shift - months)
    return dtstart


class _Item:
    """One item's occurrences over the span asked for, generated once and kept for bisection.

    dateutil's ``between`` and ``after`` walk from dtstart on every call. Here
    iteration starts at an anchor near the first instant asked for, and goes on
    from where it stopped when a later span is asked for.
    """

    def __init__(self, source: str, tz: str, item: ScheduleItem, quiet: QuietWindows) -> None:
        self.source = source
        self.item = item
        self._quiet = quiet
        self.duration_ms = _duration_ms(item)
        self._tz = ZoneInfo(tz)
        self._dtstart = datetime.fromisoformat(item.dtstart)
        self._until = datetime.fromisoformat(item.until) if item.until else None
        self._exdates = {datetime.fromisoformat(value) for value in item.exdates}
        self._text = item.rrule.removeprefix("RRULE:")
        self._rule = rrulestr(self._text, dtstart=self._dtstart)
        self._anchor: datetime | None = None  # where the current iteration began
        self._pending: Iterator[datetime] | None = None
        self._local: list[datetime] = []  # nominal local starts, ascending
        self._ms: list[int] = []  # their instants: ascending but for gaps in local time
        self._made: list[Occurrence | None] = []  # made when first asked for
        self._reached: datetime | None = None  # the last local start generated
        self._last_ms = -(2**63)

    def _restart(self, anchor: datetime) -> None:
        rule = self._rule if anchor == self._dtstart else self._rule.replace(dtstart=anchor)
        self._anchor, self._pending = anchor, iter(rule)
        self._local, self._ms, self._made = [], [], []
        self._reached, self._last_ms = None, -(2**63)

    def _cover(self, low: datetime, high: datetime) -> None:
        behind = self._anchor is None or low < self._anchor
        ahead = self._pending is not None and self._reached is not None and low > self._reached
        if behind or ahead:
            # an rruleset (several lines of RFC 5545 text) is always iterated from dtstart
            anchor = self._dtstart
            if isinstance(self._rule, rrule):
                anchor = _anchor(self._text, self._dtstart, low)
            if anchor != self._anchor:
                self._restart(anchor)
        while self._pending is not None and (self._reached is None or self._reached < high):
            try:
                local = next(self._pending)
            except (StopIteration, ValueError):
                # ValueError: dateutil finds some sub-daily rules empty only as it iterates
                self._pending = None
                break
            self._reached = local
            if self._until is not None and local > self._until:
                self._pending = None
            elif local not in self._exdates:
                ms = _epoch_ms(local, self._tz)
                self._local.append(local)
                self._ms.append(ms)
                self._made.append(None)
                self._last_ms = max(self._last_ms, ms)

    def between(self, start_ms: int, end_ms: int) -> Iterator[Occurrence]:
        # a local time is its instant plus an offset of under a day, whatever the zone
        low, high = _naive_utc(start_ms) - _DAY, _naive_utc(end_ms) + _DAY
        if high < self._dtstart or (self._until is not None and low > self._until):
            return
        self._cover(low, high)
        for i in range(bisect_left(self._local, low), bisect_left(self._local, high)):
            if start_ms <= self._ms[i] < end_ms:
                made = self._made[i]
                if made is None:
                    made = self._made[i] = self._occurrence(self._ms[i], self._local[i])
                yield made

    def done_before(self, at_ms: int) -> bool:
        """Nothing of this item starts at or after ``at_ms`` (once a span up to it was asked)."""
        if self._until is not None and _naive_utc(at_ms) - _DAY > self._until:
            return True
        started = self._anchor is not None
        return started and self._pending is None and self._last_ms < at_ms

    def _occurrence(self, start_ms: int, local: datetime) -> Occurrence:
        item = self.item
        blocked = None
        if not ignores_quiet_hours(item.priority) and self._quiet.is_quiet(start_ms):
            blocked = MISSED_QUIET
        local_start = local.isoformat()
        return Occurrence(
            key=f"{item.id}@{local_start}",
            item_id=item.id,
            source=self.source,
            start_ms=start_ms,
            end_ms=start_ms + self.duration_ms,
            priority=item.priority,
            gain_db=item.gain_db,
            label=item.label,
            clip=item.clip,
            stream=item.stream,
            local_start=local_start,
            lang=item.lang,
            blocked=blocked,
        )


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


class Schedule:
    """The merged schedule of one device: build it again when a document or the config changes.

    It keeps each item's occurrences as they are asked for, so asking again is
    cheap; it is not safe to share between threads.
    """

    def __init__(self, items: Sequence[_Item], quiet: QuietWindows) -> None:
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
        return cls([_Item(source, tz, item, quiet) for source, tz, item in merge(docs)], quiet)

    def is_quiet(self, at_ms: int) -> bool:
        return self.quiet.is_quiet(at_ms)

    def occurrences(self, start_ms: int, end_ms: int) -> list[Occurrence]:
        """Every occurrence starting in [start_ms, end_ms), by start, priority (high first), key."""
        found = [o for item in self._items for o in item.between(start_ms, end_ms)]
        return sorted(found, key=_order)

    def next_after(self, now_ms: int) -> Occurrence | None:
        """The first occurrence starting after ``now_ms``, blocked or not."""
        start, span = now_ms + 1, _DAY_MS
        while start <= _MAX_MS:
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

    def plan(
        self, start_ms: int, end_ms: int, max_delay_ms: int = DEFAULT_MAX_DELAY_MS
    ) -> list[Slot]:
        """The conflict preview: a slot for each occurrence starting in [start_ms, end_ms),
        and for those started earlier and still playing at ``start_ms``.

        Occurrences from the longest item's length (plus ``max_delay_ms``)
        before the window to the longest item's length after it take part, so
        that what plays across either edge is resolved as it will be.
        """
        slots = resolve(
            self.occurrences(start_ms - self._longest_ms - max_delay_ms, end_ms + self._longest_ms),
            self.quiet,
            max_delay_ms,
        )
        return [s for s in slots if _shows_in(s, start_ms, end_ms)]


def _shows_in(slot: Slot, start_ms: int, end_ms: int) -> bool:
    """Starts in the window, or started before it and still plays at its start."""
    if slot.occurrence.start_ms >= end_ms:
        return False
    if slot.occurrence.start_ms >= start_ms:
        return True
    return slot.end_ms is not None and slot.end_ms > start_ms


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class BroadcastRules:
    """A commune's local limits on broadcasting (DOMAIN.md); None is no limit.

    Hà Nội's wards: ``BroadcastRules(2, 15, frozenset(range(5)))``. A session is
    a run of non-emergency slots that play, with gaps of at most
    ``session_gap_minutes``; it belongs to the local day and weekday it starts
    on. Emergencies are exempt.
    """

    max_sessions_per_day: int | None = None
    max_session_minutes: int | None = None
    allowed_weekdays: frozenset[int] = frozenset(range(7))  # 0 Monday .. 6 Sunday
    session_gap_minutes: int = 5
    tz: str = DEFAULT_TZ

    def sessions(self, slots: Iterable[Slot]) -> list[tuple[int, int]]:
        """(start_ms, end_ms) of each session the rules count, in order."""
        played = sorted(
            (s.start_ms, s.end_ms)
            for s in slots
            if s.start_ms is not None
            and s.end_ms is not None
            and s.occurrence.level is not Level.EMERGENCY
        )
        merged: list[tuple[int, int]] = []
        for start, end in played:
            if merged and start - merged[-1][1] <= self.session_gap_minutes * 60_000:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def violations(self, slots: Iterable[Slot]) -> list[str]:
        """Sentences for the conflict preview, in time order; empty when the plan is allowed."""
        tz = ZoneInfo(self.tz)
        found: list[tuple[str, str]] = []
        per_day: dict[date, int] = defaultdict(int)
        for start, end in self.sessions(slots):
            local = (_EPOCH + timedelta(milliseconds=start)).astimezone(tz)
            day = local.date()
            per_day[day] += 1
            minutes = (end - start) / 60_000
            if self.max_session_minutes is not None and minutes > self.max_session_minutes:
                found.append(
                    (
                        local.isoformat(),
                        f"{local:%Y-%m-%d %H:%M}: a session of {minutes:g} min, "
                        f"at most {self.max_session_minutes}",
                    )
                )
        for day, count in per_day.items():
            if day.weekday() not in self.allowed_weekdays:
                found.append(
                    (
                        day.isoformat(),
                        f"{day} ({_WEEKDAYS[day.weekday()]}): "
                        "no broadcasting on this day of the week",
                    )
                )
            if self.max_sessions_per_day is not None and count > self.max_sessions_per_day:
                found.append(
                    (
                        day.isoformat(),
                        f"{day}: {count} sessions, at most {self.max_sessions_per_day}",
                    )
                )
        return [message for _, message in sorted(found)]
