"""A schedule entry as a broadcaster writes it, as it is stored, and what a publish sent.

The entries' service is controller.radio.scheduling; these are its values, and
the refusals of timings that can never play (``check_timing``), said in the
broadcaster's words before the wire schema says them in its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from broadcast.recurrence import first_start
from controller.db.broadcast_tables import ScheduleRow
from controller.radio.clip_library import Invalid
from controller.radio.targets import Target
from protocol.commands import (
    DEFAULT_TZ,
    MAX_FIRES_PER_DAY,
    check_month_days,
    sub_minute,
    too_frequent,
    until_moment,
)


class EntryInput(BaseModel):
    """A schedule entry as a broadcaster writes it; the wire schema checks the rest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_kind: Literal["group", "device"]
    target_id: str
    rrule: str
    dtstart: str  # local ISO date-time in tz
    until: str | None = None
    exdates: list[str] = []
    tz: str = DEFAULT_TZ
    level: Literal["normal", "priority", "emergency"] = "normal"
    priority: int | None = None  # within the level; its default otherwise
    clip_sha256: str | None = None
    stream_url: str | None = None
    stream_duration_s: int | None = None
    station_id: int | None = None  # a relayed station: its stream, for stream_duration_s
    label: str = ""
    gain_db: float = 0.0
    lang: str = "vi"
    enabled: bool = True
    item_id: str | None = None  # the same id on a device replaces its group's item

    @property
    def target(self) -> Target:
        return Target(self.target_kind, self.target_id)


@dataclass(frozen=True)
class Entry:
    id: int
    item_id: str
    target: Target
    level: str
    priority: int
    label: str
    rrule: str
    dtstart: str
    until: str | None
    exdates: list[str]
    tz: str
    clip_sha256: str | None
    stream_url: str | None
    stream_duration_s: int | None
    station_id: int | None
    gain_db: float
    lang: str
    enabled: bool
    version: int
    created_by: str
    updated_ms: int
    approval: str  # approved | pending | rejected: only approved is on air

    @classmethod
    def of(cls, row: ScheduleRow) -> Entry:
        return cls(
            row.id,
            row.item_id,
            Target(row.target_kind, row.target_id),  # type: ignore[arg-type]
            row.level,
            row.priority,
            row.label,
            row.rrule,
            row.dtstart,
            row.until,
            list(row.exdates),
            row.tz,
            row.clip_sha256,
            row.stream_url,
            row.stream_duration_s,
            row.station_id,
            row.gain_db,
            row.lang,
            row.enabled,
            row.version,
            row.created_by,
            row.updated_ms,
            row.approval or "approved",
        )


@dataclass(frozen=True)
class Published:
    topic: str
    version: int
    envelope_id: str
    items: int


def _when(moment: datetime) -> str:
    return moment.strftime("%d/%m/%Y %H:%M")


def check_timing(entry: EntryInput, name: str) -> None:
    """Refuse a timing that can never play, naming the entry ``name``; cheaply.

    Text the wire schema cannot read is left to it. A rule that fires more than
    once a minute is refused on sight (issue 12); one that never falls on a
    real day is found by ``first_start`` within one 400-year cycle, not by a
    search to the year 9999 (seconds for a daily rule).
    """
    try:
        dtstart = datetime.fromisoformat(entry.dtstart)
        until = until_moment(entry.until) if entry.until else None
    except ValueError:
        return
    if sub_minute(entry.rrule):
        raise Invalid(
            "too_frequent",
            f"Mục «{name}» lặp quá dày (nhiều lần trong một phút): mỗi mục phát tối đa "
            "một lần mỗi phút, hãy chọn lặp theo phút, giờ, ngày hoặc tuần",
            f"Entry «{name}» repeats more than once a minute: an entry plays at most once a "
            "minute, choose a rule by the minute, hour, day or week",
        )
    if too_frequent(entry.rrule):
        raise Invalid(
            "too_frequent",
            f"Mục «{name}» lặp quá dày: tối đa {MAX_FIRES_PER_DAY} lần một ngày (mỗi 15 phút), "
            f"hoặc ghi số lần (COUNT) không quá {MAX_FIRES_PER_DAY}",
            f"Entry «{name}» repeats too often: at most {MAX_FIRES_PER_DAY} times a day (every "
            f"15 minutes), or give a COUNT of at most {MAX_FIRES_PER_DAY}",
        )
    if until is not None and until < dtstart:
        raise Invalid(
            "ends_before_start",
            f"Mục «{name}» kết thúc ({_when(until)}) trước khi bắt đầu ({_when(dtstart)}): "
            "sửa ngày kết thúc hoặc ngày bắt đầu",
            f"Entry «{name}» ends ({_when(until)}) before it starts ({_when(dtstart)}): "
            "correct its end or its start",
        )
    never = Invalid(
        "never_fires",
        f"Quy tắc lặp của mục «{name}» không rơi vào ngày nào có thật (như ngày 31/02), "
        "nên sẽ không bao giờ phát: sửa quy tắc lặp",
        f"The rule of entry «{name}» falls on no day that exists (such as 31 February), "
        "so it would never play: correct the rule",
    )
    try:
        check_month_days(entry.rrule.removeprefix("RRULE:"))
        first = first_start(entry.rrule, dtstart)
    except ValueError as exc:
        if "names no day" in str(exc):
            raise never from None
        return  # not RFC 5545: the wire schema says so
    if first is None:
        raise never
    if until is not None and first > until:
        raise Invalid(
            "ends_before_first",
            f"Mục «{name}» kết thúc ({_when(until)}) trước lần phát đầu tiên "
            f"({_when(first)}): dời ngày kết thúc về sau",
            f"Entry «{name}» ends ({_when(until)}) before its first play ({_when(first)}): "
            "move its end later",
        )
