"""Booking a number ahead (đặt lịch trước): which days and slots an office offers, who may
take one, and the code the citizen types at the kiosk.

Pure: no I/O and no clock. ``now_ms`` is passed in, and so is the source of randomness for
codes, so the public page, the tests and a benchmark ask the same questions of the same code.

- **Days.** The next ``days_ahead`` working days of the service (its weekdays), today
  included while a slot of it is still ahead.
- **Slots.** Each issuing window is cut into ``slot_min`` slots (a last piece shorter than
  a slot is not offered); each holds ``capacity`` citizens.
- **Phones.** At most ``per_phone_per_day`` bookings a day per phone number (Hà Nội's
  iHanoi rule), whatever the office or service.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud, typed on a phone
CODE_LENGTH = 6  # 32**6, about a billion: guessing one with a rate limit is hopeless
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
# a Vietnamese mobile number: 0 or +84 or 84, then 3/5/7/8/9 and eight digits
_MOBILE = re.compile(r"^(?:\+?84|0)([35789]\d{8})$")


class BookingRefused(Exception):
    """Why a booking is not taken; ``key`` names the message (controller.queue.texts)."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


def minutes_of(hhmm: str) -> int:
    if not _HHMM.fullmatch(hhmm):
        raise ValueError(f"{hhmm!r} is not a time of day as HH:MM (00:00-23:59, or 24:00)")
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class BookableService:
    """A service of an office as the booking page offers it."""

    code: str
    name_vi: str
    name_en: str
    hours: tuple[tuple[str, str], ...]
    weekdays: frozenset[int]  # 0 = Monday


@dataclass(frozen=True)
class BookingRules:
    slot_min: int = 15
    capacity: int = 2  # citizens per slot and service
    days_ahead: int = 7  # working days offered
    per_phone_per_day: int = 2
    tz: str = "Asia/Ho_Chi_Minh"


@dataclass(frozen=True)
class Slot:
    start_ms: int
    label: str  # "07:15", local 24-hour time


def local_day(ms: int, tz: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


def booking_days(service: BookableService, rules: BookingRules, now_ms: int) -> list[date]:
    """The working days a citizen may choose, from today while a slot of it is ahead."""
    day, days = local_day(now_ms, rules.tz), list[date]()
    for _ in range(7 * rules.days_ahead + 7):  # enough calendar days for any weekday set
        if day.weekday() in service.weekdays and (
            days or any(s.start_ms > now_ms for s in day_slots(service, day, rules))
        ):
            days.append(day)
            if len(days) == rules.days_ahead:
                break
        day += timedelta(days=1)
    return days


def day_slots(service: BookableService, day: date, rules: BookingRules) -> list[Slot]:
    """Every slot of ``day`` for ``service`` (none on a day it does not open)."""
    if day.weekday() not in service.weekdays:
        return []
    zone, slots = ZoneInfo(rules.tz), list[Slot]()
    midnight = datetime.combine(day, time(), zone)
    for start, end in service.hours:
        minute, stop = minutes_of(start), minutes_of(end)
        while minute + rules.slot_min <= stop:
            at = midnight + timedelta(minutes=minute)
            slots.append(Slot(int(at.timestamp() * 1000), f"{minute // 60:02d}:{minute % 60:02d}"))
            minute += rules.slot_min
    return slots


def normal_phone(raw: str) -> str:
    """A mobile number as ``0xxxxxxxxx``, whatever spaces, dots or +84 it was typed with."""
    compact = re.sub(r"[\s.\-()]", "", raw)
    match = _MOBILE.fullmatch(compact)
    if match is None:
        raise BookingRefused("booking.bad_phone")
    return "0" + match.group(1)


def parse_day(raw: str) -> date:
    """A day as the page sends it (``yyyy-mm-dd``) or as a person types it (``dd/mm/yyyy``)."""
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(raw.strip(), fmt).date()
        except ValueError:
            continue
    raise BookingRefused("booking.bad_day")


def check_booking(
    service: BookableService,
    rules: BookingRules,
    day: date,
    slot_label: str,
    now_ms: int,
    *,
    taken: int,
    phone_that_day: int,
) -> Slot:
    """The slot a booking would hold, or BookingRefused saying why not.

    ``taken`` is how many live bookings the slot already holds, ``phone_that_day`` how many
    live bookings this phone number has on ``day`` (any office, any service).
    """
    if day not in booking_days(service, rules, now_ms):
        raise BookingRefused("booking.day_not_offered", days=rules.days_ahead)
    slot = next((s for s in day_slots(service, day, rules) if s.label == slot_label), None)
    if slot is None:
        raise BookingRefused("booking.bad_slot")
    if slot.start_ms <= now_ms:
        raise BookingRefused("booking.slot_past")
    if phone_that_day >= rules.per_phone_per_day:
        raise BookingRefused("booking.phone_limit", limit=rules.per_phone_per_day)
    if taken >= rules.capacity:
        raise BookingRefused("booking.slot_full")
    return slot


def new_code(randbelow: Callable[[int], int]) -> str:
    """A booking code: six characters a citizen can read out and type (``secrets.randbelow``)."""
    return "".join(CODE_ALPHABET[randbelow(len(CODE_ALPHABET))] for _ in range(CODE_LENGTH))


def normal_code(raw: str) -> str:
    """A typed code as stored: upper case, with the spaces and dashes people add dropped."""
    code = re.sub(r"[\s\-]", "", raw).upper()
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        raise BookingRefused("booking.bad_code")
    return code
