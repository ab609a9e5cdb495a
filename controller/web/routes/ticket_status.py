"""The citizen's ticket page on the controller's public address (no sign-in).

``/ve/{kiosk}/{ticket id}`` is where a kiosk given the controller's address points its
tickets' QR code: the number, its state, the people ahead, the estimated wait and
"Sắp đến lượt" (controller/queue/ticket_status.py), in Vietnamese or English. The page
needs no script (it reloads itself by a meta refresh) and is served under a CSP that
allows nothing but this site's stylesheet. Views count per caller's address.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from controller import i18n
from controller.deps import AppState, app_state, client_ip
from controller.queue.ticket_status import Status, TicketStatuses
from controller.web.routes import lang_of, render

router = APIRouter(tags=["ticket status"])
REFRESH_S = 15
STATUS_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
TZ = ZoneInfo("Asia/Ho_Chi_Minh")

i18n.register(
    {
        "ve.title": ("Số thứ tự {number}", "Queue number {number}"),
        "ve.number": ("Số thứ tự", "Queue number"),
        "ve.issued": ("Lấy số lúc {time} ngày {day}", "Taken at {time} on {day}"),
        "ve.ahead": ("Số người đang chờ trước", "People ahead"),
        "ve.near": (
            "Sắp đến lượt: xin đến gần quầy và chú ý nghe gọi số",
            "Your turn is near: please come close to the counters and listen for your number",
        ),
        "ve.wait": (
            "Thời gian chờ ước tính: khoảng {minutes} phút",
            "Estimated wait: about {minutes} min",
        ),
        "ve.wait_guess": (
            "ước tính sơ bộ, chưa có số liệu hôm nay",
            "a rough guess: no service times yet today",
        ),
        "ve.no_wait": (
            "Các quầy đang tạm nghỉ: chưa ước tính được thời gian chờ",
            "The counters are paused: no wait estimate for now",
        ),
        "ve.called": ("Xin mời đến quầy số {counter}", "Please go to counter {counter}"),
        "ve.served": ("Đã phục vụ xong. Cảm ơn quý khách.", "Served. Thank you."),
        "ve.skipped": (
            "Đã gọi nhưng vắng mặt: xin liên hệ quầy để được gọi lại",
            "Called but absent: please ask at a counter to be called again",
        ),
        "ve.refresh": (
            "Trang tự cập nhật mỗi {seconds} giây",
            "This page refreshes every {seconds} seconds",
        ),
        "ve.not_found": (
            "Không tìm thấy vé này. Vui lòng quét lại mã QR trên vé, hoặc hỏi cán bộ tại quầy.",
            "This ticket was not found. Please scan the QR code on the ticket again, or ask"
            " at a counter.",
        ),
        "ve.too_many": (
            "Bạn đã mở trang quá nhiều lần. Vui lòng thử lại sau 1 phút.",
            "Too many views. Please try again in 1 minute.",
        ),
    }
)


def statuses_of(request: Request) -> TicketStatuses:
    state: AppState = app_state(request)
    assert state.tickets is not None  # create_app builds it
    return state.tickets


def _view(status: Status, names: dict[str, tuple[str, str]], lang: i18n.Lang) -> dict[str, Any]:
    t = status.ticket
    name = names.get(t.queue)
    at = dt.datetime.fromtimestamp(t.issued_ms / 1000, TZ)
    return {
        "number": t.number,
        "service": None if name is None else name[lang == "en"],
        "state": t.state,
        "counter": t.counter,
        "priority": t.priority,
        "time": f"{at:%H:%M}",
        "day": f"{at:%d/%m/%Y}",
        **(status.wait.view() if status.wait is not None else {}),
    }


@router.get("/ve/{kiosk}/{ticket_id}", response_class=HTMLResponse, include_in_schema=False)
def ticket_page(request: Request, kiosk: str, ticket_id: str) -> HTMLResponse:
    state = app_state(request)
    now = state.now_ms()
    if state.ticket_views is not None and not state.ticket_views.allow(client_ip(request), now):
        response = render(request, "ticket_missing.html", status_code=429, key="ve.too_many")
    else:
        status = statuses_of(request).status(kiosk[:48], ticket_id[:64], now)
        if status is None:
            response = render(request, "ticket_missing.html", status_code=404, key="ve.not_found")
        else:
            office = state.settings.booking.office(kiosk)
            names = {s.code: (s.name_vi, s.name_en) for s in (office.services if office else [])}
            view = _view(status, names, lang_of(request))
            response = render(request, "ticket_status.html", v=view, refresh=REFRESH_S)
    response.headers["Content-Security-Policy"] = STATUS_CSP
    response.headers["Cache-Control"] = "no-store"
    return response
