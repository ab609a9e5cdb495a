"""Schedule documents and instants for the schedule tests: items, a device's Schedule, ms."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from broadcast.collisions import Slot
from broadcast.schedule import Schedule
from protocol.commands import QuietHours, ScheduleSet

OWN = "xaso/dev/loa-1/schedule"
VN = "Asia/Ho_Chi_Minh"
MIN = 60_000
FAR = 2**53


def item(id: str, rrule: str, dtstart: str, minutes: float = 5, **extra: Any) -> dict[str, Any]:
    """A schedule item playing a clip of ``minutes``, or the ``stream`` given in ``extra``."""
    clip = {
        "sha256": "ab" * 32,
        "url": "http://c/api/clips/ab",
        "bytes": 1000,
        "duration_ms": int(minutes * MIN),
    }
    body = {"id": id, "rrule": rrule, "dtstart": dtstart, "clip": clip, **extra}
    if "stream" in extra:
        del body["clip"]
    return body


def doc(*items: dict[str, Any], tz: str = VN) -> ScheduleSet:
    return msgspec.convert({"version": 1, "tz": tz, "items": list(items)}, ScheduleSet)


def build(*items: dict[str, Any], tz: str = VN, quiet: list[str] | None = None) -> Schedule:
    hours = [QuietHours(start=q.split("-")[0], end=q.split("-")[1]) for q in quiet or []]
    return Schedule.build([(OWN, doc(*items, tz=tz))], hours, VN)


def ms(local: str, tz: str = VN) -> int:
    """Epoch ms of a local time, computed independently of the module under test."""
    return int(datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


YEAR_2027 = (ms("2027-01-01T00:00:00"), ms("2028-01-01T00:00:00"))
DAY = (ms("2027-01-01T00:00:00"), ms("2027-01-02T00:00:00"))
ZONES = [VN, "Europe/Berlin", "America/New_York"]


def outcomes(slots: list[Slot]) -> list[tuple[str, str, str | None, str | None, str | None]]:
    def hhmm(at: int | None) -> str | None:
        if at is None:
            return None
        return datetime.fromtimestamp(at / 1000, ZoneInfo(VN)).strftime("%H:%M")

    return [
        (s.occurrence.item_id, s.outcome, hhmm(s.start_ms), hhmm(s.end_ms), s.reason) for s in slots
    ]
