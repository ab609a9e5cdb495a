"""A commune's local limits on broadcasting, checked on a plan (``Schedule.plan``'s slots)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from broadcast.collisions import Slot
from broadcast.levels import Level
from protocol.commands import DEFAULT_TZ

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
