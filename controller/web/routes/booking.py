"""The public booking pages (đặt lịch trước): no sign-in, a phone in a citizen's hand.

Pages under ``/dat-lich`` (plain forms, no script needed), the same as JSON under
``/api/public``. Every booking or cancel asked counts against the caller's address
(``[booking] attempts_per_ip``); a phone number is never shown back in full.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from controller import i18n
from controller.deps import AppState, app_state, client_ip
from controller.queue.booking_rules import (
    BookingRefused,
    booking_days,
    day_slots,
    local_day,
    parse_day,
)
from controller.queue.bookings import Booked, Bookings, bookable, rules_of
from controller.settings import BookingOffice
from controller.web.qr import qr_svg
from controller.web.routes import error_responses, lang_of, render

router = APIRouter(tags=["booking"])
WEEKDAYS_VI = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật")
WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
STATUS = {
    "booking.no_office": 404,
    "booking.not_found": 404,
    "booking.slot_full": 409,
    "booking.phone_limit": 409,
    "booking.cancel_past": 409,
    "booking.too_many": 429,
}

i18n.register(
    {
        "booking.title": ("Đặt lịch lấy số trước", "Book a queue number ahead"),
        "booking.choose_service": ("Chọn thủ tục cần làm", "Choose the service you need"),
        "booking.choose_day": ("Chọn ngày", "Choose a day"),
        "booking.choose_slot": ("Chọn giờ đến", "Choose when you will come"),
        "booking.places": ("còn {n} chỗ", "{n} places left"),
        "booking.full": ("đã kín", "full"),
        "booking.no_slot_left": (
            "Ngày này đã kín lịch. Vui lòng chọn ngày khác.",
            "This day is fully booked. Please choose another day.",
        ),
        "booking.phone": ("Số điện thoại di động", "Mobile phone number"),
        "booking.phone_hint": (
            "Mỗi số điện thoại được đặt tối đa 2 lịch một ngày.",
            "Each phone number may book at most 2 times a day.",
        ),
        "booking.submit": ("Đặt lịch", "Book"),
        "booking.done": ("Đã đặt lịch", "Booked"),
        "booking.your_code": ("Mã đặt lịch của bạn", "Your booking code"),
        "booking.when": ("Giờ hẹn: {time}, {weekday} {day}", "Time: {time}, {weekday} {day}"),
        "booking.at_kiosk": (
            "Khi đến nơi, bấm \u201cĐã đặt lịch\u201d trên máy lấy số rồi nhập mã này "
            "hoặc đưa mã QR vào máy quét. Vui lòng đến trước giờ hẹn ít phút.",
            "When you arrive, press \u201cBooked\u201d on the ticket kiosk and type this code "
            "or hold the QR code to its scanner. Please come a few minutes early.",
        ),
        "booking.keep_code": (
            "Hãy ghi lại mã hoặc chụp màn hình này.",
            "Write the code down or take a screenshot.",
        ),
        "booking.cancel_title": ("Hủy lịch đã đặt", "Cancel a booking"),
        "booking.cancel_link": ("Hủy lịch đã đặt", "Cancel a booking"),
        "booking.code": ("Mã đặt lịch (6 ký tự)", "Booking code (6 characters)"),
        "booking.cancel_submit": ("Hủy lịch", "Cancel the booking"),
        "booking.cancelled": (
            "Đã hủy lịch {code} lúc {time} ngày {day}.",
            "Booking {code} at {time} on {day} is cancelled.",
        ),
        "booking.back": ("Quay lại", "Back"),
        "booking.no_offices": (
            "Chưa có nơi nào nhận đặt lịch trước.",
            "No office takes bookings ahead yet.",
        ),
        # refusals: each says what to do
        "booking.no_office": (
            "Không tìm thấy nơi tiếp nhận này. Vui lòng chọn lại từ trang đặt lịch.",
            "This office was not found. Please choose again from the booking page.",
        ),
        "booking.bad_service": (
            "Thủ tục này không nhận đặt lịch. Vui lòng chọn thủ tục khác.",
            "This service takes no bookings. Please choose another service.",
        ),
        "booking.bad_day": (
            "Ngày không hợp lệ. Vui lòng chọn một ngày trong danh sách.",
            "That is not a valid day. Please choose a day from the list.",
        ),
        "booking.day_not_offered": (
            "Chỉ đặt được lịch trong {days} ngày làm việc tới. Vui lòng chọn ngày khác.",
            "Bookings are taken for the next {days} working days only. Please choose another day.",
        ),
        "booking.bad_slot": (
            "Giờ đã chọn không có trong lịch tiếp nhận. Vui lòng chọn giờ khác.",
            "That time is not in the office hours. Please choose another time.",
        ),
        "booking.slot_past": (
            "Giờ này đã qua. Vui lòng chọn giờ muộn hơn.",
            "That time has passed. Please choose a later time.",
        ),
        "booking.slot_full": (
            "Giờ này vừa hết chỗ. Vui lòng chọn giờ khác.",
            "That time has just filled up. Please choose another time.",
        ),
        "booking.phone_limit": (
            "Số điện thoại này đã đặt {limit} lịch trong ngày đó, là số lịch tối đa. "
            "Vui lòng chọn ngày khác hoặc hủy một lịch đã đặt.",
            "This phone number already holds {limit} bookings that day, the most allowed. "
            "Please choose another day or cancel a booking.",
        ),
        "booking.bad_phone": (
            "Số điện thoại không hợp lệ. Nhập số di động 10 chữ số, ví dụ 0912345678.",
            "That phone number is not valid. Type a 10-digit mobile number, e.g. 0912345678.",
        ),
        "booking.bad_code": (
            "Mã đặt lịch gồm 6 chữ và số, ví dụ K7M2QX. Vui lòng kiểm tra lại.",
            "A booking code is 6 letters and digits, e.g. K7M2QX. Please check it.",
        ),
        "booking.not_found": (
            "Không tìm thấy lịch với mã và số điện thoại này. Vui lòng kiểm tra lại.",
            "No booking has this code and phone number. Please check them.",
        ),
        "booking.cancel_past": (
            "Giờ hẹn đã qua nên không hủy được nữa.",
            "The booked time has passed; it can no longer be cancelled.",
        ),
        "booking.too_many": (
            "Bạn đã thử quá nhiều lần. Vui lòng thử lại sau {minutes} phút.",
            "Too many tries. Please try again in {minutes} minutes.",
        ),
    }
)


def refusal(exc: BookingRefused) -> i18n.Refusal:
    return i18n.Refusal(STATUS.get(exc.key, 422), exc.key, None, **exc.params)


def bookings_of(request: Request) -> Bookings:
    state: AppState = app_state(request)
    assert state.bookings is not None  # create_app builds it
    return state.bookings


def _day_text(day: dt.date, lang: i18n.Lang) -> dict[str, str]:
    names = WEEKDAYS_EN if lang == "en" else WEEKDAYS_VI
    return {"iso": day.isoformat(), "weekday": names[day.weekday()], "text": f"{day:%d/%m/%Y}"}


def offer(bookings: Bookings, office: BookingOffice, service: str, day: dt.date | None) -> Any:
    """The days a service offers and, for ``day`` (default: the first), its slots' places."""
    offered = office.service(service)
    if offered is None:
        raise BookingRefused("booking.bad_service")
    rules, now = rules_of(office, bookings.section), bookings.now_ms()
    days = booking_days(bookable(offered), rules, now)
    chosen = day if day is not None else (days[0] if days else None)
    if chosen is not None and chosen not in days:
        raise BookingRefused("booking.day_not_offered", days=rules.days_ahead)
    slots = []
    if chosen is not None:
        taken = bookings.taken(office, service, chosen)
        for slot in day_slots(bookable(offered), chosen, rules):
            if slot.start_ms > now:
                left = rules.capacity - taken.get(slot.start_ms, 0)
                slots.append({"label": slot.label, "start_ms": slot.start_ms, "left": left})
    return offered, days, chosen, slots


def _booked_view(booked: Booked, lang: i18n.Lang) -> dict[str, Any]:
    day = _day_text(booked.day, lang)
    return {
        "code": booked.code,
        "office": booked.office.name,
        "kiosk": booked.office.kiosk,
        "service": booked.service,
        "slot_ms": booked.slot_ms,
        "time": booked.slot_label,
        "day": day["text"],
        "weekday": day["weekday"],
    }


# pages


@router.get("/dat-lich", response_class=HTMLResponse, include_in_schema=False)
def booking_home(request: Request) -> HTMLResponse:
    return render(request, "booking_home.html", offices=bookings_of(request).section.offices)


@router.get("/dat-lich/huy", response_class=HTMLResponse, include_in_schema=False)
def cancel_page(request: Request) -> HTMLResponse:
    return render(request, "booking_cancel.html", code="", done=None)


@router.get("/dat-lich/{kiosk}/{service}", response_class=HTMLResponse, include_in_schema=False)
def booking_page(request: Request, kiosk: str, service: str, day: str = "") -> HTMLResponse:
    return _form_page(request, kiosk, service, day)


def _form_page(
    request: Request,
    kiosk: str,
    service: str,
    day: str,
    *,
    error: i18n.Refusal | None = None,
    phone: str = "",
) -> HTMLResponse:
    bookings, lang = bookings_of(request), lang_of(request)
    try:
        office = bookings.office(kiosk)
        offered, days, chosen, slots = offer(
            bookings, office, service, parse_day(day) if day else None
        )
    except BookingRefused as exc:
        if error is None:
            raise refusal(exc) from None
        office, offered, days, chosen, slots = None, None, [], None, []
    return render(
        request,
        "booking.html",
        status_code=error.status if error else 200,
        office=office,
        service=offered,
        days=[_day_text(d, lang) for d in days],
        chosen=chosen.isoformat() if chosen else "",
        slots=slots,
        phone=phone,
        error=error,
    )


@router.post("/dat-lich", response_class=HTMLResponse, include_in_schema=False)
def book_form(
    request: Request,
    *,
    kiosk: Annotated[str, Form(max_length=48)] = "",
    service: Annotated[str, Form(max_length=40)] = "",
    day: Annotated[str, Form(max_length=10)] = "",
    slot: Annotated[str, Form(max_length=5)] = "",
    phone: Annotated[str, Form(max_length=20)] = "",
) -> HTMLResponse:
    bookings, lang = bookings_of(request), lang_of(request)
    try:
        bookings.attempt(client_ip(request))
        booked = bookings.book(kiosk, service, parse_day(day), slot, phone)
    except BookingRefused as exc:
        return _form_page(request, kiosk, service, day, error=refusal(exc), phone=phone)
    view = _booked_view(booked, lang)
    return render(request, "booking_done.html", status_code=201, b=view, qr=qr_svg(booked.code))


@router.post("/dat-lich/huy", response_class=HTMLResponse, include_in_schema=False)
def cancel_form(
    request: Request,
    code: Annotated[str, Form(max_length=20)] = "",
    phone: Annotated[str, Form(max_length=20)] = "",
) -> HTMLResponse:
    bookings = bookings_of(request)
    try:
        bookings.attempt(client_ip(request))
        row = bookings.cancel(code, phone)
    except BookingRefused as exc:
        error = refusal(exc)
        return render(
            request,
            "booking_cancel.html",
            status_code=error.status,
            code=code,
            done=None,
            error=error,
        )
    office = bookings.office(row.kiosk)
    done = _cancelled(row.code, row.slot_ms, office.tz)
    return render(request, "booking_cancel.html", code="", done=done)


def _cancelled(code: str, slot_ms: int, tz: str) -> dict[str, str]:
    at = dt.datetime.fromtimestamp(slot_ms / 1000, ZoneInfo(tz))
    return {"code": code, "time": f"{at:%H:%M}", "day": f"{at:%d/%m/%Y}"}


# the same as JSON, for programs and the benchmark


class BookingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kiosk: Annotated[str, Field(max_length=48)]
    service: Annotated[str, Field(max_length=40)]
    day: Annotated[str, Field(max_length=10)]  # yyyy-mm-dd or dd/mm/yyyy
    slot: Annotated[str, Field(max_length=5)]  # "07:15"
    phone: Annotated[str, Field(max_length=20)]


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, Field(max_length=20)]
    phone: Annotated[str, Field(max_length=20)]


class BookedOut(BaseModel):
    code: str
    office: str
    kiosk: str
    service: str
    slot_ms: int
    time: str
    day: str
    weekday: str


class DayOut(BaseModel):
    iso: str  # yyyy-mm-dd
    weekday: str
    text: str  # dd/mm/yyyy


class SlotOut(BaseModel):
    label: str  # "07:15"
    start_ms: int
    left: int  # places left


class OfferOut(BaseModel):
    office: str
    days: list[DayOut]
    day: str | None
    slots: list[SlotOut]
    today: str


class CancelledOut(BaseModel):
    code: str
    cancelled: bool


PUBLIC_ERRORS = error_responses(404, 409, 422, 429)


@router.get("/api/public/booking/{kiosk}/{service}", responses=PUBLIC_ERRORS)
def slots_api(request: Request, kiosk: str, service: str, day: str = "") -> OfferOut:
    """The days a service offers, and the places left in each slot of ``day``."""
    bookings, lang = bookings_of(request), lang_of(request)
    try:
        office = bookings.office(kiosk)
        _offered, days, chosen, slots = offer(
            bookings, office, service, parse_day(day) if day else None
        )
    except BookingRefused as exc:
        raise refusal(exc) from None
    return OfferOut(
        office=office.name,
        days=[DayOut(**_day_text(d, lang)) for d in days],
        day=chosen.isoformat() if chosen else None,
        slots=[SlotOut(**s) for s in slots],
        today=local_day(bookings.now_ms(), office.tz).isoformat(),
    )


@router.post("/api/public/bookings", status_code=201, responses=PUBLIC_ERRORS)
def book_api(request: Request, body: BookingIn) -> BookedOut:
    """Book a slot for a phone number; the answer's code is typed or scanned at the kiosk."""
    bookings = bookings_of(request)
    try:
        bookings.attempt(client_ip(request))
        booked = bookings.book(body.kiosk, body.service, parse_day(body.day), body.slot, body.phone)
    except BookingRefused as exc:
        raise refusal(exc) from None
    return BookedOut(**_booked_view(booked, lang_of(request)))


@router.post("/api/public/bookings/cancel", responses=PUBLIC_ERRORS)
def cancel_api(request: Request, body: CancelIn) -> CancelledOut:
    """Cancel a booking: its code and the phone number it was made with."""
    bookings = bookings_of(request)
    try:
        bookings.attempt(client_ip(request))
        row = bookings.cancel(body.code, body.phone)
    except BookingRefused as exc:
        raise refusal(exc) from None
    return CancelledOut(code=row.code, cancelled=True)
