"""kiosk.numbering: services, hours, local days, limits, call order, wait estimates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec import ValidationError

from kiosk.numbering import (
    RATINGS,
    QueuePolicy,
    Service,
    call_order,
    can_issue,
    format_number,
    local_day,
    next_ticket,
    people_ahead,
)
from plumbing.validation import convert

VN = ZoneInfo("Asia/Ho_Chi_Minh")
HO_TICH = Service(code="ho-tich", name_vi="Hộ tịch", name_en="Civil status", prefix="A")


def at(day: int, hh: int, mm: int, ss: int = 0, month: int = 11) -> int:
    """Epoch ms of a local time in November 2026 (the 23rd is a Monday)."""
    return int(datetime(2026, month, day, hh, mm, ss, tzinfo=VN).timestamp() * 1000)


@dataclass(frozen=True)
class T:
    number: str
    priority: bool
    issued_ms: int


# services


def test_service_defaults_are_the_usual_office_hours() -> None:
    assert HO_TICH.hours == (("07:00", "11:15"), ("13:15", "16:30"))
    assert HO_TICH.weekdays == frozenset({0, 1, 2, 3, 4})
    assert HO_TICH.digits == 3


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"prefix": "a"}, "prefix"),
        ({"prefix": "AB"}, "prefix"),
        ({"code": "Hộ tịch"}, "code"),
        ({"hours": [("07:00", "25:00")]}, "HH:MM"),
        ({"hours": [("11:00", "07:00")]}, "ends before it starts"),
        ({"hours": [("07:00", "11:15"), ("11:00", "16:30")]}, "overlaps"),
        ({"hours": []}, "at least one window"),
        ({"weekdays": [7]}, "0 (Monday) to 6 (Sunday)"),
        ({"weekdays": []}, "at least one weekday"),
        ({"daily_limit": 0}, "daily_limit"),
        ({"daily_limit": 1000}, "does not fit in 3 digits"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_services_are_refused_clearly(change: dict[str, Any], error: str) -> None:
    data = msgspec.to_builtins(HO_TICH) | change
    with pytest.raises(ValidationError, match=re.escape(error)):
        convert(data, Service, strict=False)


# days and hours


def test_local_day_rolls_over_at_midnight_in_vietnam() -> None:
    midnight = 1_795_453_200_000  # 2026-11-24 00:00 +07:00 = 2026-11-23 17:00 UTC
    assert midnight == at(24, 0, 0)
    assert local_day(midnight - 1) == date(2026, 11, 23)
    assert local_day(midnight) == date(2026, 11, 24)
    # 00:15 UTC is already 07:15 in Hà Nội: the UTC date is not the office's day
    assert local_day(1_795_392_900_000) == date(2026, 11, 23)
    assert local_day(midnight, "UTC") == date(2026, 11, 23)


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (at(23, 6, 59, 59), False),
        (at(23, 7, 0), True),
        (at(23, 11, 14, 59), True),
        (at(23, 11, 15), False),  # a window's end is not inside it
        (at(23, 12, 0), False),
        (at(23, 13, 15), True),
        (at(23, 16, 29, 59), True),
        (at(23, 16, 30), False),
        (at(27, 9, 0), True),  # Friday
        (at(28, 9, 0), False),  # Saturday
        (at(29, 9, 0), False),  # Sunday
    ],
)
def test_hours_and_weekdays(when: int, open_: bool) -> None:
    refusal = can_issue(HO_TICH, when)
    assert (refusal is None) == open_
    if refusal is not None:
        assert refusal.reason == "closed"
        assert refusal.message == "Ngoài giờ tiếp nhận / Outside service hours"


def test_saturday_morning_office() -> None:
    sat = msgspec.structs.replace(HO_TICH, weekdays=frozenset({0, 1, 2, 3, 4, 5}))
    assert can_issue(sat, at(28, 9, 0)) is None
    assert (
        can_issue(convert(msgspec.to_builtins(sat), Service, strict=False), at(29, 9, 0))
        is not None
    )


def test_daily_limit() -> None:
    small = convert(msgspec.to_builtins(HO_TICH) | {"daily_limit": 50}, Service, strict=False)
    assert can_issue(small, at(23, 9, 0), issued_today=49) is None
    refusal = can_issue(small, at(23, 9, 0), issued_today=50)
    assert refusal is not None and refusal.reason == "limit"
    assert refusal.message.startswith("Đã hết số")
    # closed wins over the limit: the message that explains more
    closed = can_issue(small, at(23, 20, 0), issued_today=50)
    assert closed is not None and closed.reason == "closed"


def test_format_number() -> None:
    assert format_number("A", 15, 3) == "A015"
    assert format_number("B", 999, 3) == "B999"
    assert format_number("C", 7, 4) == "C0007"
    for bad in (0, 1000):
        with pytest.raises(ValueError, match="does not fit"):
            format_number("A", bad, 3)


def test_ratings_are_the_five_survey_levels() -> None:
    assert [RATINGS[k][0] for k in (5, 4, 3, 2, 1)] == [
        "Rất hài lòng",
        "Hài lòng",
        "Bình thường",
        "Không hài lòng",
        "Rất không hài lòng",
    ]


# call order

WAITING = [
    T("A001", False, 1),
    T("A002", True, 2),
    T("A003", False, 3),
    T("A004", False, 4),
    T("A005", True, 5),
    T("A006", False, 6),
    T("A007", False, 7),
]


def numbers(ts: list[T]) -> list[str]:
    return [t.number for t in ts]


def test_strict_calls_every_priority_ticket_first() -> None:
    order = call_order(WAITING, QueuePolicy("strict"))
    assert numbers(order) == ["A002", "A005", "A001", "A003", "A004", "A006", "A007"]


def test_interleave_calls_one_priority_after_n_normal() -> None:
    policy = QueuePolicy("interleave", every=2)
    order = call_order(WAITING, policy)
    assert numbers(order) == ["A001", "A003", "A002", "A004", "A006", "A005", "A007"]
    # the count carries over from earlier calls
    assert numbers(call_order(WAITING, policy, normal_since_priority=2))[0] == "A002"
    # a priority ticket does not wait for normal ones that are not there
    only_prio = [t for t in WAITING if t.priority]
    assert next_ticket(only_prio, policy) == only_prio[0]
    assert next_ticket([], policy) is None


def test_people_ahead() -> None:
    strict, inter = QueuePolicy("strict"), QueuePolicy("interleave", every=2)
    assert people_ahead(WAITING[4], WAITING, strict) == 1
    assert people_ahead(WAITING[4], WAITING, inter) == 5
    assert people_ahead(WAITING[0], WAITING, strict) == 2
    with pytest.raises(ValueError, match="not among"):
        people_ahead(T("A999", False, 99), WAITING, strict)


def test_bad_policies() -> None:
    with pytest.raises(ValueError, match="every >= 1"):
        QueuePolicy("interleave", every=0)
    with pytest.raises(ValueError, match="strict' or 'interleave"):
        QueuePolicy("random")  # type: ignore[arg-type]


tickets = st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=40).map(
    lambda xs: [T(f"A{i + 1:03d}", p, ms) for i, (p, ms) in enumerate(xs)]
)


@given(
    tickets,
    st.sampled_from(["strict", "interleave"]),
    st.integers(1, 5),
    st.integers(0, 6),
)
def test_every_ticket_is_called_exactly_once_fifo_within_class(
    waiting: list[T], mode: Any, every: int, since: int
) -> None:
    policy = QueuePolicy(mode, every)
    # call one at a time, the way the counters do, carrying the interleave count
    left, called, run = list(waiting), [], since
    while (chosen := next_ticket(left, policy, run)) is not None:
        if not chosen.priority and any(t.priority for t in left):
            # a normal ticket goes ahead of a waiting priority one only within the quota
            assert mode == "interleave" and run < every
        called.append(chosen)
        left.remove(chosen)
        run = 0 if chosen.priority else run + 1
    assert sorted(numbers(called)) == sorted(numbers(waiting))
    assert len(set(numbers(called))) == len(called)
    for cls in (True, False):
        mine = [(t.issued_ms, t.number) for t in called if t.priority is cls]
        assert mine == sorted(mine)
    # the whole order at once is the same as calling one by one
    assert numbers(called) == numbers(call_order(waiting, policy, since))
