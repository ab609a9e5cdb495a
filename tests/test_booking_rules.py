"""The booking rules (controller/queue/booking_rules.py): days, slots, phones, codes."""

from __future__ import annotations

import itertools
import random
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.queue.booking_rules import (
    CODE_ALPHABET,
    BookableService,
    BookingRefused,
    BookingRules,
    booking_days,
    check_booking,
    day_slots,
    new_code,
    normal_code,
    normal_phone,
    parse_day,
)

HN = ZoneInfo("Asia/Ho_Chi_Minh")
HOURS = (("07:00", "11:15"), ("13:15", "16:30"))
HO_TICH = BookableService("ho-tich", "Hộ tịch", "Civil status", HOURS, frozenset(range(5)))
RULES = BookingRules(slot_min=15, capacity=2)


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, tzinfo=HN).timestamp() * 1000)


MONDAY_9 = at(2026, 11, 23, 9)  # Monday 23 November 2026, 09:00 in Hà Nội


def test_the_next_seven_working_days_skip_the_weekend_and_start_today_while_slots_are_ahead():
    days = booking_days(HO_TICH, RULES, MONDAY_9)
    assert days == [date(2026, 11, d) for d in (23, 24, 25, 26, 27, 30)] + [date(2026, 12, 1)]
    evening = booking_days(HO_TICH, RULES, at(2026, 11, 23, 16, 30))
    assert evening[0] == date(2026, 11, 24) and len(evening) == 7


def test_a_day_is_cut_into_slots_inside_each_window_and_no_shorter_last_piece():
    slots = day_slots(HO_TICH, date(2026, 11, 24), RULES)
    labels = [s.label for s in slots]
    assert labels[0] == "07:00" and labels[16] == "11:00" and labels[17] == "13:15"
    assert "11:15" not in labels and labels[-1] == "16:15" and len(labels) == 17 + 13
    assert slots[0].start_ms == at(2026, 11, 24, 7)
    half = day_slots(HO_TICH, date(2026, 11, 24), BookingRules(slot_min=30))
    assert [s.label for s in half][7:9] == ["10:30", "13:15"]  # 11:00-11:15 is too short a slot
    assert day_slots(HO_TICH, date(2026, 11, 28), RULES) == []  # a Saturday


def test_a_booking_takes_a_free_slot_of_an_offered_day():
    slot = check_booking(
        HO_TICH, RULES, date(2026, 11, 24), "07:15", MONDAY_9, taken=1, phone_that_day=1
    )
    assert slot.start_ms == at(2026, 11, 24, 7, 15)


@pytest.mark.parametrize(
    ("day", "slot", "taken", "phone", "key"),
    [
        (date(2026, 11, 28), "07:00", 0, 0, "booking.day_not_offered"),  # Saturday
        (date(2026, 12, 2), "07:00", 0, 0, "booking.day_not_offered"),  # the eighth working day
        (date(2026, 11, 20), "07:00", 0, 0, "booking.day_not_offered"),  # last Friday
        (date(2026, 11, 24), "07:05", 0, 0, "booking.bad_slot"),  # not a slot's start
        (date(2026, 11, 24), "12:00", 0, 0, "booking.bad_slot"),  # the lunch break
        (date(2026, 11, 24), "7:00", 0, 0, "booking.bad_slot"),
        (date(2026, 11, 23), "08:45", 0, 0, "booking.slot_past"),
        (date(2026, 11, 23), "09:00", 0, 0, "booking.slot_past"),  # starts now: too late
        (date(2026, 11, 24), "07:00", 2, 0, "booking.slot_full"),
        (date(2026, 11, 24), "07:00", 0, 2, "booking.phone_limit"),
    ],
)
def test_a_booking_is_refused_with_its_reason(day, slot, taken, phone, key):
    with pytest.raises(BookingRefused) as caught:
        check_booking(HO_TICH, RULES, day, slot, MONDAY_9, taken=taken, phone_that_day=phone)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("raw", "phone"),
    [
        ("0912345678", "0912345678"),
        ("091 234 5678", "0912345678"),
        ("+84 912 345 678", "0912345678"),
        ("84912345678", "0912345678"),
        ("0912.345.678", "0912345678"),
        ("(035) 123-4567", "0351234567"),
    ],
)
def test_a_mobile_number_is_kept_in_one_form_however_it_is_typed(raw, phone):
    assert normal_phone(raw) == phone


@pytest.mark.parametrize(
    "raw",
    ["", "091234567", "09123456789", "0212345678", "0912a45678", "+1 912 345 678", "０912345678"],
)
def test_anything_but_a_vietnamese_mobile_number_is_refused(raw):
    with pytest.raises(BookingRefused) as caught:
        normal_phone(raw)
    assert caught.value.key == "booking.bad_phone"


def test_codes_are_six_unambiguous_characters_and_typed_codes_are_read_kindly():
    rng = random.Random(7)
    codes = {new_code(rng.randrange) for _ in range(2000)}
    assert len(codes) == 2000  # no clash in two thousand draws of a billion
    assert all(len(c) == 6 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set("01IO") & set(CODE_ALPHABET)
    assert normal_code(" k7m-2qx ") == "K7M2QX"
    for bad in ("K7M2Q", "K7M2QXX", "K7M2Q0", "K7M2QI", "K7M 2Q!"):
        with pytest.raises(BookingRefused):
            normal_code(bad)


def test_days_are_read_as_the_page_sends_them_or_as_people_write_them():
    assert parse_day("2026-11-24") == parse_day("24/11/2026") == date(2026, 11, 24)
    for bad in ("", "24-11-2026", "2026-02-30", "tomorrow", "11/24/2026"):
        with pytest.raises(BookingRefused) as caught:
            parse_day(bad)
        assert caught.value.key == "booking.bad_day"


weekday_sets = st.frozensets(st.integers(0, 6), min_size=1)


@given(
    weekdays=weekday_sets,
    slot_min=st.sampled_from([10, 15, 20, 30, 45, 60]),
    days_ahead=st.integers(1, 10),
    offset_min=st.integers(0, 14 * 24 * 60),
)
def test_offered_days_are_working_days_in_order_and_each_has_a_slot_ahead(
    weekdays, slot_min, days_ahead, offset_min
):
    service = BookableService("s", "S", "S", HOURS, weekdays)
    rules = BookingRules(slot_min=slot_min, days_ahead=days_ahead)
    now = MONDAY_9 + offset_min * 60_000
    days = booking_days(service, rules, now)
    assert len(days) == days_ahead
    assert days == sorted(set(days))
    assert all(d.weekday() in weekdays for d in days)
    for day in days:
        slots = day_slots(service, day, rules)
        assert any(s.start_ms > now for s in slots)
        assert [s.start_ms for s in slots] == sorted(s.start_ms for s in slots)
        gaps = [b.start_ms - a.start_ms for a, b in itertools.pairwise(slots)]
        assert all(gap >= slot_min * 60_000 for gap in gaps)
