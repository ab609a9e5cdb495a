"""A schedule entry as a broadcaster writes it, as it is stored, and what a publish sent.

The entries' service is controller.radio.scheduling; these are its values, and
the refusals of timings that can never play (``check_timing``), said in the
broadcaster's words before the wire schema says them in its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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
    times: list[str] = []  # local "HH:MM", one item each; none: the time of dtstart
    more_targets: list[Target] = []  # beyond the first; each gets every item

    @property
    def target(self) -> Target:
        return Target(self.target_kind, self.target_id)

    @property
    def targets(self) -> list[Target]:
        return list(dict.fromkeys([self.target, *self.more_targets]))


@dataclass(frozen=True)
class Entry:
    id: int
    item_id: str
    target: Target  # the first of targets
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
    times: list[str]
    targets: list[Target]

    @classmethod
    def of(cls, row: ScheduleRow) -> Entry:
        return cls(
            row.id,
            row.item_id,
            targets_of(row)[0],
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
            list(row.times),
            targets_of(row),
        )


def targets_of(row: ScheduleRow) -> list[Target]:
    """Every target of a stored entry: its first in columns, the others in ``more_targets``."""
    first = Target(row.target_kind, row.target_id)  # type: ignore[arg-type]
    more = [Target(t["kind"], t["id"]) for t in row.more_targets or []]  # type: ignore[arg-type]
    return [first, *more]


def more_targets_value(entry: EntryInput) -> list[dict[str, Any]]:
    return [{"kind": t.kind, "id": t.id} for t in entry.targets[1:]]


def item_times(item_id: str, dtstart: str, times: list[str]) -> list[tuple[str, str]]:
    """The wire items of an entry, as (item id, local start): one per time of day, each
    with a stable id ``<entry item>-<HHMM>`` so plays stay keyed to their time; an
    entry without times is its one item, as before times existed."""
    if not times:
        return [(item_id, dtstart)]
    day = dtstart[:10]
    return [(f"{item_id}-{at.replace(':', '')}", f"{day}T{at}:00") for at in times]


@dataclass(frozen=True)
class Published:
    topic: str
    version: int
    envelope_id: str
    items: int


def _when(moment: datetime) -> str:
    return moment.strftime("%d/%m/%Y %H:%M")


MAX_TIMES = 12  # a loudspeaker programme has a few slots a day, not dozens
MAX_TARGETS = 50
MAX_ITEM_ID = 48  # protocol.topics.ID_PATTERN: each time's item adds "-HHMM"
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def check_times(times: list[str], name: str, item_id: str) -> list[str]:
    """The times of day of entry ``name``, in order; refused in the broadcaster's words."""
    if times and len(item_id) > MAX_ITEM_ID - len("-HHMM"):
        raise Invalid(
            "item_id_too_long",
            f"Mã mục «{item_id}» quá dài cho một mục có giờ phát: tối đa {MAX_ITEM_ID - 5} ký tự",
            f"Item id «{item_id}» is too long for an entry with times: at most "
            f"{MAX_ITEM_ID - 5} characters",
        )
    if len(times) > MAX_TIMES:
        raise Invalid(
            "too_many_times",
            f"Mục «{name}» có {len(times)} giờ phát: tối đa {MAX_TIMES} giờ một mục, "
            "hãy tách thành nhiều mục",
            f"Entry «{name}» has {len(times)} times: at most {MAX_TIMES} an entry, "
            "split it into several entries",
        )
    for at in times:
        if not _HHMM.match(at):
            shown = at[:8]
            raise Invalid(
                "bad_time",
                f"Giờ phát «{shown}» không hợp lệ: ghi theo 24 giờ, từ 00:00 đến 23:59 "
                "(ví dụ 06:30 hoặc 17:00)",
                f"«{shown}» is not a time of day: write it in 24-hour form, from 00:00 to "
                "23:59 (such as 06:30 or 17:00)",
            )
    twice = sorted({at for at in times if times.count(at) > 1})
    if twice:
        raise Invalid(
            "duplicate_time",
            f"Giờ phát {', '.join(twice)} được nhập hai lần trong mục «{name}»: bỏ bớt một",
            f"The time {', '.join(twice)} is given twice in entry «{name}»: remove one",
        )
    return sorted(times)


def check_targets(targets: list[Target]) -> None:
    if len(targets) > MAX_TARGETS:
        raise Invalid(
            "too_many_targets",
            f"Một mục lịch phát tới tối đa {MAX_TARGETS} nơi; chọn «Toàn xã» hoặc một nhóm",
            f"An entry reaches at most {MAX_TARGETS} targets; choose the whole commune or a group",
        )


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
