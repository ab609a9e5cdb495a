"""Bodies of commands and documents sent by the controller (PROTOCOL.md, "Commands").

Each type name maps to one msgspec Struct; a body that does not validate is
refused as ``bad_body``. Unknown fields are refused too, so a typo in a
controller never passes silently.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from dateutil.rrule import rrulestr
from msgspec import Meta

from plumbing.validation import convert
from protocol.topics import ID_PATTERN

Priority = Annotated[int, Meta(ge=0, le=9)]
GainDb = Annotated[float, Meta(ge=-60.0, le=20.0)]
EpochMs = Annotated[int, Meta(ge=0, le=2**53)]
DocVersion = Annotated[int, Meta(ge=1, le=2**53)]
DeviceOrGroupId = Annotated[str, Meta(pattern=rf"^{ID_PATTERN}\Z")]
Url = Annotated[
    str, Meta(min_length=1, max_length=2048, pattern=r"^(https?|rtsp|rtmp|file)://[!-~]+\Z")
]
DEFAULT_TZ = "Asia/Ho_Chi_Minh"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    r"""Unknown fields refused, and no coercion (``msgspec.convert`` is strict): "50" is
    not 50, true is not 1, 2.0 is not an integer (an integer is still a number where a
    float is asked for). msgspec checks the bounds when converting, not in ``__init__``:
    what comes from outside is converted. Patterns end in ``\Z``: msgspec matches them
    with Python's ``re``, whose ``$`` lets a final newline through. Each subclass says
    ``frozen=True`` again, for mypy."""


class ClipRef(Strict, frozen=True):
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
    url: Url
    bytes: Annotated[int, Meta(gt=0, le=2**40)]
    duration_ms: Annotated[int, Meta(gt=0, le=24 * 3600 * 1000)]


class BroadcastPlay(Strict, frozen=True):
    clip: ClipRef
    priority: Priority = 2
    gain_db: GainDb = 0.0
    repeat: Annotated[int, Meta(ge=1, le=100)] = 1
    at: EpochMs | None = None
    label: Annotated[str, Meta(max_length=200)] = ""


class BroadcastStream(Strict, frozen=True):
    url: Url
    duration_s: Annotated[int, Meta(ge=1, le=24 * 3600)]
    priority: Priority = 2
    gain_db: GainDb = 0.0
    at: EpochMs | None = None
    label: Annotated[str, Meta(max_length=200)] = ""
    # airs while the stream cannot be reached or is dead air; none: the relay stops
    fallback: ClipRef | None = None
    # The site's own stream server: pull with the device's credentials, as for clips.
    # False for anyone else's (a province's radio): they are never sent there.
    device_auth: bool = False
    # A relayed station's own URL, pulled (without credentials) when the site's mount
    # of it cannot be had: the controller or its pull is down (relay_stations).
    direct_url: Url | None = None


class BroadcastStop(Strict, frozen=True):
    priority_max: Priority = 9


class DeviceVolume(Strict, frozen=True):
    volume_pct: Annotated[int, Meta(ge=0, le=100)]


class DeviceTestTone(Strict, frozen=True):
    frequency_hz: Annotated[int, Meta(ge=20, le=20000)] = 1000
    duration_s: Annotated[float, Meta(gt=0, le=60)] = 3.0
    gain_db: GainDb = -12.0


class Empty(Strict, frozen=True):
    pass


class QuietHours(Strict, frozen=True):
    """A daily window, local time, in which only emergencies play."""

    start: str
    end: str

    def __post_init__(self) -> None:
        for value in (self.start, self.end):
            if not _HHMM.match(value):
                raise ValueError("use HH:MM, 24-hour clock, e.g. 21:30")


def check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


class ConfigSet(Strict, frozen=True):
    version: DocVersion
    groups: Annotated[list[DeviceOrGroupId], Meta(max_length=32)] = []
    volume_pct: Annotated[int, Meta(ge=0, le=100)] = 80
    quiet_hours: Annotated[list[QuietHours], Meta(max_length=8)] = []
    tz: str = DEFAULT_TZ
    telemetry_interval_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    label: Annotated[str, Meta(max_length=200)] = ""

    def __post_init__(self) -> None:
        check_tz(self.tz)


class StreamRef(Strict, frozen=True):
    url: Url
    duration_s: Annotated[int, Meta(ge=1, le=24 * 3600)]
    fallback: ClipRef | None = None  # as BroadcastStream's
    device_auth: bool = False  # as BroadcastStream's
    direct_url: Url | None = None  # as BroadcastStream's


def _local_datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a local ISO date-time like 2026-11-23T06:30:00"
        ) from exc
    if parsed.tzinfo is not None:
        raise ValueError(f"{value!r} carries an offset; give local time in the schedule's tz")
    return parsed


def bare_date(value: str) -> date | None:
    """The day a bare ISO date (2026-12-25) names; None for a date-time.

    As an exdate it skips every occurrence of that local day; as ``until``, the
    rule runs to the end of that day: what a user who typed a day means.
    """
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def until_moment(value: str) -> datetime:
    """``until`` as the last local instant it lets play (a bare date: its end)."""
    day = bare_date(value)
    return datetime.combine(day, time.max) if day else _local_datetime(value)


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def check_month_days(rule: str) -> None:
    """Refuse a rule like 30 February: it never fires, and proving so costs an edge
    a search to the year 9999 (seconds on a server, minutes on a Pi)."""
    parts = dict(p.split("=", 1) for p in rule.upper().split(";") if "=" in p)
    if "BYMONTH" not in parts or "BYMONTHDAY" not in parts:
        return
    months = [int(m) for m in parts["BYMONTH"].split(",")]
    days = [abs(int(d)) for d in parts["BYMONTHDAY"].split(",")]
    if not any(d <= _MONTH_DAYS[m - 1] for m in months for d in days):
        raise ValueError(f"rrule {rule!r} names no day that exists in its months")


def rule_parts(rule: str) -> list[tuple[str, str]]:
    """(NAME, VALUE) of every part of every line of a rule, upper-cased, ``RRULE:`` dropped."""
    parts = []
    for raw in re.split(r"[;\n]", rule.upper()):
        name, sep, value = raw.strip().removeprefix("RRULE:").partition("=")
        if sep:
            parts.append((name, value))
    return parts


def sub_minute(rule: str) -> bool:
    """A rule firing more than once a minute (FREQ=SECONDLY, several BYSECOND values).

    Refused everywhere: such a rule expands to 86,400 occurrences a day per item,
    which held an agent's command path for seconds (issue 12).
    """
    parts = rule_parts(rule)
    seconds = [value for name, value in parts if name == "BYSECOND"]
    return ("FREQ", "SECONDLY") in parts or any(len(v.split(",")) > 1 for v in seconds)


MAX_FIRES_PER_DAY = 96  # every 15 minutes: more than any loudspeaker programme needs


def fires_per_day(rule: str) -> float:
    """At most how often a rule fires in a day, from its parts (an upper bound: it ignores
    what narrows it to some days). Bounds what an edge expands per item (issue 12)."""
    parts = dict(rule_parts(rule))

    def count(name: str) -> int | None:
        return len(parts[name].split(",")) if name in parts else None

    given = parts.get("INTERVAL", "1")
    interval = max(1, int(given)) if given.isdigit() else 1
    seconds, minutes, hours = count("BYSECOND") or 1, count("BYMINUTE"), count("BYHOUR")
    freq = parts.get("FREQ", "")
    if freq == "SECONDLY":
        return 86_400 / interval
    if freq == "MINUTELY":
        return (minutes or 60 / interval) * (hours or 24) * seconds
    if freq == "HOURLY":
        return (minutes or 1) * seconds * (hours or 24 / interval)
    return (hours or 1) * (minutes or 1) * seconds


def too_frequent(rule: str) -> bool:
    """Fires more than MAX_FIRES_PER_DAY times a day, and no COUNT keeps it within that."""
    count = dict(rule_parts(rule)).get("COUNT", "")
    bounded = count.isdigit() and int(count) <= MAX_FIRES_PER_DAY
    return fires_per_day(rule) > MAX_FIRES_PER_DAY and not bounded


class ScheduleItem(Strict, frozen=True, kw_only=True):
    id: Annotated[str, Meta(pattern=rf"^{ID_PATTERN}\Z")]
    label: Annotated[str, Meta(max_length=200)] = ""
    clip: ClipRef | None = None
    stream: StreamRef | None = None
    priority: Priority = 2
    gain_db: GainDb = 0.0
    rrule: Annotated[str, Meta(min_length=1, max_length=1000)]
    dtstart: str
    until: str | None = None
    exdates: Annotated[list[str], Meta(max_length=1000)] = []
    lang: Annotated[str, Meta(max_length=16)] = "vi"

    def __post_init__(self) -> None:
        for value in (self.dtstart, self.until, *self.exdates):
            if value is not None:
                _local_datetime(value)
        if (self.clip is None) == (self.stream is None):
            raise ValueError("an item has exactly one of 'clip' or 'stream'")
        rule = self.rrule.removeprefix("RRULE:")
        if any(part.upper().startswith(("DTSTART", "UNTIL=")) for part in re.split(r"[;\n]", rule)):
            raise ValueError("put DTSTART and UNTIL in 'dtstart' and 'until', not in 'rrule'")
        try:
            rrulestr(rule, dtstart=_local_datetime(self.dtstart))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError(f"rrule {self.rrule!r} is not RFC 5545: {exc}") from exc
        check_month_days(rule)
        if sub_minute(rule):
            raise ValueError(
                f"item {self.id!r}: rrule {self.rrule!r} repeats more often than once a minute: "
                "use FREQ=MINUTELY or coarser, with at most one BYSECOND"
            )
        if too_frequent(rule):
            raise ValueError(
                f"item {self.id!r}: rrule {self.rrule!r} may fire more than "
                f"{MAX_FIRES_PER_DAY} times a day: repeat at most every 15 minutes, "
                f"or give a COUNT of at most {MAX_FIRES_PER_DAY}"
            )
        if self.until is not None and until_moment(self.until) < _local_datetime(self.dtstart):
            raise ValueError(
                f"item {self.id!r}: until {self.until} is before dtstart {self.dtstart}, "
                "so it never plays: move one of them"
            )


class ScheduleSet(Strict, frozen=True):
    version: DocVersion
    tz: str = DEFAULT_TZ
    items: Annotated[list[ScheduleItem], Meta(max_length=500)] = []

    def __post_init__(self) -> None:
        check_tz(self.tz)
        ids = [item.id for item in self.items]
        if len(ids) != len(set(ids)):
            raise ValueError("schedule item ids must be unique")


BOOKING_CODE = r"^[2-9A-HJ-NP-Z]{6}\Z"  # six of 32 letters and digits, none read as another


class Booking(Strict, frozen=True):
    """One citizen booked at a kiosk's office: the code they type, the slot they hold.

    No name or phone number: the kiosk needs only to recognise the code."""

    code: Annotated[str, Meta(pattern=BOOKING_CODE)]
    service: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}\Z")]
    slot_ms: EpochMs  # the slot's start
    slot_min: Annotated[int, Meta(ge=5, le=120)]


class BookingsSet(Strict, frozen=True):
    """A kiosk's booked citizens from today on: each new version replaces the last, and the
    kiosk keeps the last one it accepted, so it redeems codes with no network."""

    version: DocVersion
    bookings: Annotated[list[Booking], Meta(max_length=20_000)] = []

    def __post_init__(self) -> None:
        codes = [b.code for b in self.bookings]
        if len(codes) != len(set(codes)):
            raise ValueError("booking codes must be unique")


COMMAND_BODIES: dict[str, type[Strict]] = {
    "broadcast.play": BroadcastPlay,
    "broadcast.stream": BroadcastStream,
    "broadcast.stop": BroadcastStop,
    "device.volume": DeviceVolume,
    "device.test_tone": DeviceTestTone,
    "device.restart_agent": Empty,
    "device.ping": Empty,
}
DOCUMENT_BODIES: dict[str, type[Strict]] = {
    "config.set": ConfigSet,
    "schedule.set": ScheduleSet,
    "bookings.set": BookingsSet,
}
DOCUMENT_TOPIC_LEAF: dict[str, Literal["config", "schedule", "bookings"]] = {
    "config.set": "config",
    "schedule.set": "schedule",
    "bookings.set": "bookings",
}


def body_model(msg_type: str) -> type[Strict] | None:
    return COMMAND_BODIES.get(msg_type) or DOCUMENT_BODIES.get(msg_type)


def is_document(msg_type: str) -> bool:
    return msg_type in DOCUMENT_BODIES


S = TypeVar("S", bound=Strict)


def checked(body: S) -> S:
    """``body`` with its bounds and rules checked, as the edge will check them: msgspec
    checks them when converting, not in ``__init__``. Raises ``Faults``, listing all."""
    return convert(msgspec.to_builtins(body), type(body))


def dump_body(body: Strict) -> dict[str, Any]:
    """The body as JSON types, without the fields that are None."""
    return msgspec.to_builtins(drop_none(body))  # type: ignore[no-any-return]


def drop_none(struct: msgspec.Struct) -> dict[str, Any]:
    """``struct``'s fields that are not None, in nested Structs too (a dict's values,
    ``Event.body``'s nulls, are kept as they are)."""
    return {
        name: _drop_none(value)
        for name in struct.__struct_fields__
        if (value := getattr(struct, name)) is not None
    }


def _drop_none(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return drop_none(value)
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value
