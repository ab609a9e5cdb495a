"""Occurrences of schedule items: RFC 5545 recurrence expanded on a document's wall clock.

Pure: no I/O and no clock; every instant is epoch milliseconds (UTC).

- **Recurrence.** RFC 5545 through dateutil, on the wall clock of the
  document's ``tz``; ``dtstart``, ``until`` (inclusive) and ``exdates`` are
  local. An exdate is an exact local date-time, or a bare date that skips
  that whole day; a bare ``until`` runs to the end of its day. A local time
  that does not exist (spring forward) is read with the offset before the
  gap, so a 02:30 item plays at 03:30; one that happens twice (fall back) is
  the first of the two (fold=0).
  Both are RFC 5545, section 3.3.5. Keys keep the nominal local time:
  ``"bulletin@2027-03-28T02:30:00"``.
- **Quiet hours** (broadcast.quiet) block every occurrence that is not an
  emergency and starts inside them; it is returned marked ``blocked``, so that
  the edge records it as ``play.missed`` instead of dropping it silently.

A rule that never matches (February 30th) yields nothing, but dateutil looks
for a match up to year 9999 first: about a second for a yearly or monthly rule
and three to twenty for a daily one on a PC. ``first_start`` proves it in one
400-year cycle instead (a tenth of a second at worst here), so the controller
refuses such a rule at entry and an edge that holds one skips it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import gcd
from pathlib import Path
from zoneinfo import ZoneInfo

from dateutil.rrule import DAILY, YEARLY, rrule, rruleset, rrulestr

from broadcast.audio.request import PlayRequest
from broadcast.levels import Level, ignores_quiet_hours, level_of
from broadcast.quiet import QuietWindows
from protocol.commands import ClipRef, ScheduleItem, StreamRef, bare_date, until_moment

MISSED_QUIET = "quiet_hours"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_DAY = timedelta(days=1)
# the Gregorian calendar, weekdays included, repeats every 400 years (146,097 days)
_CYCLE_YEARS = 400
_MAX_YEAR = 9999  # dateutil stops iterating past it
# periods of each FREQ (YEARLY to SECONDLY, dateutil's 0 to 6) in one 400-year cycle
_PER_CYCLE = (400, 4800, 20_871, 146_097, 146_097 * 24, 146_097 * 1440, 146_097 * 86_400)
_DAY_FILTERS = ("bymonth", "bymonthday", "byyearday", "byweekno", "byweekday")
# the span datetime can hold, a day in from each end so that a margin still fits
_MIN_MS = (datetime(1, 1, 2) - _NAIVE_EPOCH) // timedelta(milliseconds=1)
MAX_MS = (datetime(9999, 12, 30) - _NAIVE_EPOCH) // timedelta(milliseconds=1)


def _naive_utc(ms: int) -> datetime:
    return _NAIVE_EPOCH + timedelta(milliseconds=min(max(ms, _MIN_MS), MAX_MS))


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

    def play_request(
        self,
        clip_path: Path | None = None,
        fallback_path: Path | None = None,
        stream_auth: str | None = None,
    ) -> PlayRequest:
        """The player's request; ``clip_path`` is the clip's file in the cache (clips only),
        ``fallback_path`` a relay's fallback clip's, ``stream_auth`` the device's
        Authorization for a stream with ``device_auth`` (the site's own server)."""
        if self.clip is not None and clip_path is None:
            raise ValueError(f"{self.key} plays clip {self.clip.sha256}: give its cached path")
        authorized = self.stream is not None and self.stream.device_auth
        return PlayRequest(
            key=self.key,
            origin="schedule",
            priority=self.priority,
            duration_ms=self.duration_ms,
            clip_path=clip_path if self.clip is not None else None,
            stream_url=self.stream.url if self.stream is not None else None,
            stream_auth=stream_auth if authorized else None,
            direct_url=self.stream.direct_url if self.stream is not None else None,
            gain_db=self.gain_db,
            at_ms=self.start_ms,
            label=self.label,
            item_id=self.item_id,
            occurrence=self.local_start,
            fallback_path=fallback_path,
        )


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


def _fires(rule: rrule) -> bool:
    """Whether ``rule`` ever fires, searching one cycle of it at most.

    Moved forward by whole 400-year cycles that are also whole multiples of its
    INTERVAL (a rule every 7 days: one cycle; every 2 years: one; every 3
    years: three), a rule keeps its calendar and its phase; placed within one
    such span of the year 9999, where dateutil gives up, it is searched over
    that span only, which holds an occurrence if any span does.
    """
    start = rule._dtstart  # dateutil keeps a rule's parts only privately
    assert start is not None
    cycle = _CYCLE_YEARS * rule._interval // gcd(_PER_CYCLE[rule._freq], rule._interval)
    late = start.year + max(0, _MAX_YEAR - cycle - start.year) // cycle * cycle
    probe = rule.replace(dtstart=start.replace(year=late), count=None, until=None)
    try:
        return next(iter(probe), None) is not None
    except ValueError:  # dateutil finds some sub-daily rules empty only as it iterates
        return False


def _fires_daily(rule: rrule) -> bool | None:
    """Whether a rule of every day, hour or minute fires, asked of a yearly rule; None: cannot.

    With INTERVAL=1 and no BYSETPOS every day is a candidate and every day has
    a time that fits, so such a rule fires if any day passes its day filters,
    and a yearly rule with the same filters (none of its defaults, given one)
    searches a cycle in 400 steps instead of 146,097.
    """
    if rule._freq < DAILY or rule._interval != 1 or rule._bysetpos or rule._byeaster:
        return None
    days = {k: v for k, v in rule._original_rule.items() if k in _DAY_FILTERS}
    if not days.keys() - {"bymonth"}:
        return True  # every day of some month
    start = rule._dtstart
    assert start is not None
    return _fires(rrule(YEARLY, dtstart=start.replace(hour=0, minute=0, second=0), **days))


def _ever_fires(rule: rrule) -> bool:
    daily = _fires_daily(rule)
    return _fires(rule) if daily is None else daily


def first_start(text: str, dtstart: datetime) -> datetime | None:
    """The first local start of an RFC 5545 rule from ``dtstart``; None if it has none.

    Bounded: a rule that never fires is found out by ``_fires`` without the
    search to the year 9999, and one that does fires within its first cycle.
    """
    rule = rrulestr(text.removeprefix("RRULE:"), dtstart=dtstart)
    members = [rule] if isinstance(rule, rrule) else []
    if isinstance(rule, rruleset):
        members = list(rule._rrule)
        if rule._rdate:  # an explicit date always fires
            members = []
    if members and not any(_ever_fires(member) for member in members):
        return None
    try:
        return next(iter(rule), None)
    except ValueError:
        return None


class ItemOccurrences:
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
        self._until = until_moment(item.until) if item.until else None
        days = {value: bare_date(value) for value in item.exdates}
        self._exdays = {day for day in days.values() if day is not None}
        self._exdates = {datetime.fromisoformat(v) for v, day in days.items() if day is None}
        self._text = item.rrule.removeprefix("RRULE:")
        self._rule = rrulestr(self._text, dtstart=self._dtstart)
        first = first_start(self._text, self._dtstart)
        # never fires, or not before it ends: nothing to search for, to the year 9999 or not
        self._empty = first is None or (self._until is not None and first > self._until)
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
            elif local not in self._exdates and local.date() not in self._exdays:
                ms = _epoch_ms(local, self._tz)
                self._local.append(local)
                self._ms.append(ms)
                self._made.append(None)
                self._last_ms = max(self._last_ms, ms)

    def between(self, start_ms: int, end_ms: int) -> Iterator[Occurrence]:
        # a local time is its instant plus an offset of under a day, whatever the zone
        low, high = _naive_utc(start_ms) - _DAY, _naive_utc(end_ms) + _DAY
        if self._empty or high < self._dtstart or (self._until is not None and low > self._until):
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
        if self._empty:
            return True
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
