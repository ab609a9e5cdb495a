"""Queue numbers at the one-stop office (bộ phận một cửa): services, issuing
hours, daily limits and who is called next (the wait: protocol.queue_wait).

Pure: no I/O and no clock. Every instant is passed in as epoch milliseconds
(UTC) with the office's time zone, so the kiosk, the counter pages and the
tests ask the same questions of the same code. kiosk.ticket_store keeps the
durable side (which numbers exist); this module holds the rules:

- **Days.** Numbers restart at local midnight; ``local_day`` is the day a
  ticket belongs to.
- **Hours.** A service issues inside its local windows (start inclusive, end
  exclusive; "24:00" ends a window at midnight) on its weekdays, up to its
  daily limit.
- **Calls.** Priority citizens (the elderly, people with disabilities,
  pregnant women, veterans and people with meritorious service, người có
  công) go first ("strict") or one after every N normal tickets
  ("interleave"); first in, first out within each class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, ClassVar, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from msgspec import Meta

from plumbing.validation import apply_field_checks

DEFAULT_TZ = "Asia/Ho_Chi_Minh"
DEFAULT_HOURS = (("07:00", "11:15"), ("13:15", "16:30"))
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# The five levels of the national satisfaction survey, best first.
RATINGS: dict[int, tuple[str, str]] = {
    5: ("Rất hài lòng", "Very satisfied"),
    4: ("Hài lòng", "Satisfied"),
    3: ("Bình thường", "Neutral"),
    2: ("Không hài lòng", "Dissatisfied"),
    1: ("Rất không hài lòng", "Very dissatisfied"),
}

SERVICE_CODE = r"^[a-z0-9][a-z0-9-]{0,39}$"  # for pydantic (the pages): Rust's regex
# for msgspec: Python's re, whose $ lets a final newline through
ServiceCode = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}\Z")]
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^(24):(00)$")  # 24:00: an end at midnight
RefusalReason = Literal["closed", "limit"]
_MESSAGES: dict[RefusalReason, str] = {
    "closed": "Ngoài giờ tiếp nhận / Outside service hours",
    "limit": "Đã hết số trong ngày / No more numbers today",
}


def _minutes(hhmm: str) -> int:
    m = _HHMM.fullmatch(hhmm)
    if m is None:
        raise ValueError(f"{hhmm!r} is not a time of day as HH:MM (00:00-23:59, or 24:00)")
    hours, minutes = m.group(1) or m.group(3), m.group(2) or m.group(4)
    return int(hours) * 60 + int(minutes)


def _hours(hours: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    if not hours:
        raise ValueError("a service needs at least one window of issuing hours")
    last_end = -1
    for start, end in hours:
        s, e = _minutes(start), _minutes(end)
        if s >= e:
            raise ValueError(f"window {start}-{end} ends before it starts")
        if s < last_end:
            raise ValueError(f"window {start}-{end} overlaps or precedes the one before it")
        last_end = e
    return hours


def _weekdays(days: frozenset[int]) -> frozenset[int]:
    if not days:
        raise ValueError("a service needs at least one weekday")
    bad = sorted(d for d in days if not 0 <= d <= 6)
    if bad:
        raise ValueError(f"weekdays are 0 (Monday) to 6 (Sunday), not {bad}")
    return days


class Service(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One button on the kiosk: a service with its own letter and number sequence."""

    code: ServiceCode
    name_vi: Annotated[str, Meta(min_length=1, max_length=100)]
    name_en: Annotated[str, Meta(min_length=1, max_length=100)]
    prefix: Annotated[str, Meta(pattern=r"^[A-Z]\Z")]
    hours: tuple[tuple[str, str], ...] = DEFAULT_HOURS
    weekdays: frozenset[int] = frozenset(range(5))  # 0 = Monday, as datetime.weekday()
    daily_limit: Annotated[int, Meta(ge=1)] = 999
    digits: Annotated[int, Meta(ge=1, le=6)] = 3
    field_checks: ClassVar = {"hours": _hours, "weekdays": _weekdays}

    def __post_init__(self) -> None:
        apply_field_checks(self)
        if self.daily_limit >= 10**self.digits:
            raise ValueError(f"daily_limit {self.daily_limit} does not fit in {self.digits} digits")


@dataclass(frozen=True)
class Refusal:
    """Why the kiosk gives no number now; ``message`` is shown as is, Vietnamese first."""

    reason: RefusalReason
    message: str


def _local(now_ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(now_ms // 1000, ZoneInfo(tz))


def local_day(now_ms: int, tz: str = DEFAULT_TZ) -> date:
    """The office's calendar day at ``now_ms``: the day a ticket's number belongs to."""
    return _local(now_ms, tz).date()


def is_open(service: Service, now_ms: int, tz: str = DEFAULT_TZ) -> bool:
    local = _local(now_ms, tz)
    if local.weekday() not in service.weekdays:
        return False
    minute = local.hour * 60 + local.minute
    return any(_minutes(s) <= minute < _minutes(e) for s, e in service.hours)


def can_issue(
    service: Service, now_ms: int, tz: str = DEFAULT_TZ, issued_today: int = 0
) -> Refusal | None:
    """None when a number may be issued now; otherwise the refusal to show."""
    if not is_open(service, now_ms, tz):
        return Refusal("closed", _MESSAGES["closed"])
    if issued_today >= service.daily_limit:
        return Refusal("limit", _MESSAGES["limit"])
    return None


def format_number(prefix: str, n: int, digits: int = 3) -> str:
    """``("A", 15, 3)`` gives ``"A015"``: the number as printed, displayed and called."""
    if not 1 <= n < 10**digits:
        raise ValueError(f"number {n} does not fit in {digits} digits")
    return f"{prefix}{n:0{digits}d}"


class Waiting(Protocol):
    """What the call policy needs of a waiting ticket."""

    @property
    def number(self) -> str: ...
    @property
    def priority(self) -> bool: ...
    @property
    def issued_ms(self) -> int: ...


T = TypeVar("T", bound=Waiting)


@dataclass(frozen=True)
class QueuePolicy:
    """``strict``: every priority ticket before any normal one. ``interleave``:
    one priority ticket after every ``every`` normal ones (sooner when no normal
    ticket waits), so that neither class can starve the other."""

    mode: Literal["strict", "interleave"] = "strict"
    every: int = 3

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "interleave"):
            raise ValueError(f"queue mode must be 'strict' or 'interleave', not {self.mode!r}")
        if self.every < 1:
            raise ValueError(f"interleave needs every >= 1, not {self.every}")


def _fifo(t: Waiting) -> tuple[int, str]:
    return (t.issued_ms, t.number)


def call_order(
    waiting: Sequence[T], policy: QueuePolicy, normal_since_priority: int = 0
) -> list[T]:
    """The order in which ``waiting`` will be called if nobody else arrives.

    ``normal_since_priority`` is how many normal tickets were called since the
    last priority one (or since opening): the interleave resumes where it was.
    """
    prio = sorted((t for t in waiting if t.priority), key=_fifo)
    normal = sorted((t for t in waiting if not t.priority), key=_fifo)
    if policy.mode == "strict":
        return prio + normal
    order: list[T] = []
    i = j = 0
    run = normal_since_priority
    while i < len(prio) or j < len(normal):
        if i < len(prio) and (run >= policy.every or j == len(normal)):
            order.append(prio[i])
            i, run = i + 1, 0
        else:
            order.append(normal[j])
            j, run = j + 1, run + 1
    return order


def next_ticket(
    waiting: Sequence[T], policy: QueuePolicy, normal_since_priority: int = 0
) -> T | None:
    order = call_order(waiting, policy, normal_since_priority)
    return order[0] if order else None


def people_ahead(
    ticket: Waiting,
    waiting: Sequence[T],
    policy: QueuePolicy,
    normal_since_priority: int = 0,
) -> int:
    """How many of ``waiting`` will be called before ``ticket`` (printed on it)."""
    order = call_order(waiting, policy, normal_since_priority)
    for i, t in enumerate(order):
        if t.number == ticket.number and t.issued_ms == ticket.issued_ms:
            return i
    raise ValueError(f"ticket {ticket.number} is not among the waiting tickets")
