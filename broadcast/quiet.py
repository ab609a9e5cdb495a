"""Quiet hours: daily local windows in which only emergencies play (ConfigSet.quiet_hours).

A window is read on the wall clock of the device's zone, so it keeps its meaning
across a daylight-saving change. It includes its start and excludes its end;
a start later than the end wraps midnight (21:30-05:00), and an equal start and
end is an empty window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from protocol.commands import DEFAULT_TZ, QuietHours

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class QuietWindow:
    start: time
    end: time

    def contains(self, clock: time) -> bool:
        if self.start <= self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end


@dataclass(frozen=True)
class QuietWindows:
    tz: ZoneInfo
    windows: tuple[QuietWindow, ...] = ()

    @classmethod
    def from_config(cls, hours: Iterable[QuietHours], tz: str = DEFAULT_TZ) -> QuietWindows:
        return cls(ZoneInfo(tz), tuple(QuietWindow(_hhmm(h.start), _hhmm(h.end)) for h in hours))

    def is_quiet(self, at_ms: int) -> bool:
        if not self.windows:
            return False
        clock = (_EPOCH + timedelta(milliseconds=at_ms)).astimezone(self.tz).time()
        return any(window.contains(clock) for window in self.windows)
