"""What the touchscreen and the buttons tell a citizen who was refused a number.

Pure: a refusal says when to come back, from the service's own hours and
weekdays, in Vietnamese and English, rather than only "closed".
"""

from __future__ import annotations

from kiosk.numbering import Service
from kiosk.office import KioskError

DAYS_VI = ("thứ Hai", "thứ Ba", "thứ Tư", "thứ Năm", "thứ Sáu", "thứ Bảy", "Chủ nhật")
DAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _days(weekdays: frozenset[int], names: tuple[str, ...], to: str) -> str:
    days = sorted(weekdays)
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{names[days[0]]} {to} {names[days[-1]]}"
    return ", ".join(names[d] for d in days)


def office_hours(service: Service) -> tuple[str, str]:
    """ "07:00–11:15, 13:15–16:30, thứ Hai đến thứ Sáu" and its English."""
    windows = ", ".join(f"{start}–{end}" for start, end in service.hours)
    return (
        f"{windows}, {_days(service.weekdays, DAYS_VI, 'đến')}",
        f"{windows}, {_days(service.weekdays, DAYS_EN, 'to')}",
    )


def come_back(exc: KioskError, service: Service) -> KioskError:
    """The refusal with when to come back; other refusals as they are."""
    hours_vi, hours_en = office_hours(service)
    if exc.code == "closed":
        vi = f"{exc.vi}. Xin mời quay lại trong giờ tiếp nhận: {hours_vi}"
        en = f"{exc.en}. Please come back during service hours: {hours_en}"
    elif exc.code == "limit":
        vi = f"{exc.vi}. Xin mời quay lại ngày làm việc sau, từ {service.hours[0][0]}"
        en = f"{exc.en}. Please come back on the next working day, from {service.hours[0][0]}"
    else:
        return exc
    return KioskError(exc.code, vi, en, exc.status)


def hall_hours(services: tuple[Service, ...] | list[Service]) -> list[tuple[str, str]]:
    """The hall TV's office hours: one line when every service keeps the same hours,
    else one line per set of hours naming its services ("Hộ tịch, Đất đai: 07:00–11:15, ...")."""
    groups: dict[tuple[str, str], list[Service]] = {}
    for service in services:
        groups.setdefault(office_hours(service), []).append(service)
    if len(groups) == 1:
        ((vi, en),) = groups
        return [(f"Giờ tiếp nhận hồ sơ: {vi}", f"Service hours: {en}")]
    return [
        (
            f"{', '.join(s.name_vi for s in group)}: {vi}",
            f"{', '.join(s.name_en for s in group)}: {en}",
        )
        for (vi, en), group in groups.items()
    ]
