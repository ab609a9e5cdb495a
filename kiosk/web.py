"""The kiosk's local web server: touchscreen, counters, hall display, rating, ticket status.

The only importer of FastAPI and uvicorn in kiosk/, imported by kiosk.role
only when a kiosk starts, so a speaker's agent never loads a web stack. The
pages are Vietnamese first, English with ``?lang=en`` (kept in a cookie),
self-contained (no CDN: the office network may have no Internet), and use
the JSON API under ``/api``. The hall display and the other pages follow
changes live through server-sent events (``/api/events``).

Counters and ratings need an officer's sign-in (kiosk.officers): a counter
page's session (cookie ``xaso_counter``) or a counter's rating device's
(``xaso_rate``), HttpOnly and SameSite=Strict, and every change also carries
the session's ``X-CSRF-Token``. The citizen's pages (ticket status, the
per-counter display, the hall display, the touchscreen) have no staff powers.

Every refusal is JSON ``{"error", "vi", "en", "message"}`` with a 4xx: an
unknown service or ticket, a counter out of range, a wrong type, a field or
a body too large, a malformed body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from kiosk.numbering import RATINGS, SERVICE_CODE
from kiosk.office import NOTE_MAX, KioskError
from kiosk.officers import Kind, Session
from kiosk.screen import DAYS_EN, DAYS_VI, hall_hours

if TYPE_CHECKING:
    from kiosk.service import Kiosk

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 4096
SSE_KEEPALIVE_S = 15.0
SSE_POLL_S = 0.2
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# the pages moved to files of their own (the hall display) get the controller's strict policy
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
)
ServiceCode = Annotated[str, Field(max_length=40, pattern=SERVICE_CODE)]
COOKIES: dict[Kind, str] = {"staff": "xaso_counter", "rate": "xaso_rate"}
CSRF_HEADER = "x-csrf-token"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TicketIn(Body):
    service: ServiceCode
    priority: bool = False


class BookingCodeIn(Body):
    code: Annotated[str, Field(max_length=32)]  # typed, or from the QR scanner


class CounterIn(Body):
    service: ServiceCode | None = None  # for a transfer
    note: Annotated[str, Field(max_length=NOTE_MAX)] | None = None  # for a transfer
    number: Annotated[str, Field(min_length=1, max_length=16)] | None = None  # for "call"


class RatingIn(Body):
    counter: int
    level: int
    ticket_id: Annotated[str, Field(max_length=64)]  # the ticket the rating page shows


class SignIn(Body):
    officer: Annotated[str, Field(min_length=1, max_length=48)]
    pin: Annotated[str, Field(min_length=1, max_length=12)]


def _error(status: int, code: str, vi: str, en: str) -> JSONResponse:
    return JSONResponse(
        {"error": code, "vi": vi, "en": en, "message": f"{vi} / {en}"}, status_code=status
    )


class BodyLimit:
    """Refuses a body over MAX_BODY_BYTES before reading it, and one of unknown length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            refusal = None
            if length is None and b"transfer-encoding" in headers:
                refusal = _error(
                    411, "length_required", "Cần độ dài nội dung", "Content-Length is required"
                )
            elif length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                refusal = _error(
                    413,
                    "too_large",
                    f"Dữ liệu quá lớn (tối đa {MAX_BODY_BYTES} byte)",
                    f"Request body too large (at most {MAX_BODY_BYTES} bytes)",
                )
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _lang(request: Request) -> str:
    asked = request.query_params.get("lang") or request.cookies.get("lang")
    return "en" if asked == "en" else "vi"


def create_app(kiosk: Kiosk) -> FastAPI:
    app = FastAPI(title="Xaso kiosk", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())

    @app.exception_handler(KioskError)
    async def _kiosk_error(_r: Request, exc: KioskError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return _error(
            422,
            "bad_request",
            f"Dữ liệu không hợp lệ ở '{where}'",
            f"Invalid input at '{where}': {first['msg']}",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return _error(405, "method", "Phương thức không được hỗ trợ", "Method not allowed")
        return _error(exc.status_code, "not_found", "Không tìm thấy trang", "Page not found")

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        lang = _lang(request)
        html = env.get_template(name).render(
            lang=lang,
            t=lambda vi, en: en if lang == "en" else vi,
            path=request.url.path,
            services=kiosk.cfg.services,
            counters=kiosk.cfg.counters,
            office=kiosk.cfg.office,
            state=kiosk.snapshot(),
            ratings=RATINGS,
            **ctx,
        )
        response = HTMLResponse(html, status_code=status)
        if request.query_params.get("lang") in ("vi", "en"):
            response.set_cookie("lang", lang, max_age=365 * 86400, samesite="lax")
        return response

    def error_page(request: Request, exc: KioskError) -> HTMLResponse:
        return page(request, "error.html", exc.status, error=exc)

    @app.get("/")
    async def _root() -> RedirectResponse:
        return RedirectResponse("/kiosk")

    @app.get("/kiosk", response_class=HTMLResponse)
    def kiosk_page(request: Request) -> HTMLResponse:
        return page(request, "kiosk.html")

    @app.get("/display", response_class=HTMLResponse)
    def display_page(request: Request) -> HTMLResponse:
        """The hall TV: numbers, the clock, the office hours and the notice (docs/kiosk.md)."""
        now_ms = kiosk.now_ms()
        response = page(
            request,
            "display.html",
            tz=kiosk.cfg.tz,
            now_ms=now_ms,
            clock=_clock(now_ms, kiosk.cfg.tz, _lang(request)),
            hours=hall_hours(kiosk.cfg.services),
            notice=kiosk.cfg.hall_notice,
        )
        response.headers["Content-Security-Policy"] = STRICT_CSP
        return response

    @app.get("/display/{counter}", response_class=HTMLResponse)
    def counter_display_page(request: Request, counter: int) -> HTMLResponse:
        """The screen above one counter: the number served there now (no staff powers)."""
        try:
            kiosk.office.check_counter(counter)
        except KioskError as exc:
            return error_page(request, exc)
        return page(request, "counter_display.html", counter=counter)

    @app.get("/ve/{ticket_id}", response_class=HTMLResponse)
    def ticket_page(request: Request, ticket_id: str) -> HTMLResponse:
        try:
            ticket = kiosk.ticket_view(kiosk.office.ticket(ticket_id[:64]))
        except KioskError as exc:
            return error_page(request, exc)
        return page(request, "ticket.html", ticket=ticket)

    # the JSON API

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return kiosk.snapshot()

    @app.get("/api/services")
    def services() -> list[dict[str, Any]]:
        return [
            {"code": s.code, "name_vi": s.name_vi, "name_en": s.name_en, "prefix": s.prefix}
            for s in kiosk.cfg.services
        ]

    @app.post("/api/tickets", status_code=201)
    def issue(body: TicketIn) -> dict[str, Any]:
        return kiosk.issue(body.service, body.priority)

    @app.post("/api/bookings/redeem", status_code=201)
    def redeem(body: BookingCodeIn) -> dict[str, Any]:
        """ "Đã đặt lịch": a booked citizen's code gives a number called at their slot."""
        return kiosk.redeem_booking(body.code)

    @app.get("/api/tickets/{ticket_id}")
    def ticket(ticket_id: Annotated[str, Field(max_length=64)]) -> dict[str, Any]:
        return kiosk.ticket_view(kiosk.office.ticket(ticket_id))

    _staff_routes(app, kiosk, page, error_page)

    @app.get("/api/events")
    async def events() -> StreamingResponse:
        return StreamingResponse(
            _stream(kiosk),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return app


def _staff_routes(
    app: FastAPI,
    kiosk: Kiosk,
    page: Callable[..., HTMLResponse],
    error_page: Callable[[Request, KioskError], HTMLResponse],
) -> None:
    """The officers' side: sign-in, the counter page and its actions, the rating device."""

    def session_of(request: Request, kind: Kind, counter: int) -> Session | None:
        return kiosk.officers.session(
            request.cookies.get(COOKIES[kind]), kind, counter, kiosk.now_ms()
        )

    def signed_in(request: Request, kind: Kind, counter: int) -> Session:
        """The session a change needs, with its CSRF token; refused otherwise, whoever asks."""
        kiosk.office.check_counter(counter)
        session = session_of(request, kind, counter)
        if session is None:
            vi, en = (
                (f"quầy {counter}", f"counter {counter}")
                if kind == "staff"
                else (f"đánh giá của quầy {counter}", f"rating page of counter {counter}")
            )
            raise KioskError(
                "sign_in_required",
                f"Cần đăng nhập: cán bộ mở trang {vi} và nhập mã PIN",
                f"Sign-in required: an officer opens the {en} and enters a PIN",
                401,
            )
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), session.csrf):
            raise KioskError(
                "csrf",
                "Yêu cầu không đến từ trang của quầy: xin tải lại trang",
                "The request did not come from the counter's page: reload the page",
                403,
            )
        return session

    def sign_in(kind: Kind, counter: int, body: SignIn) -> JSONResponse:
        kiosk.office.check_counter(counter)
        done = kiosk.officers.sign_in(kind, counter, body.officer, body.pin, kiosk.now_ms())
        response = JSONResponse(
            {
                "counter": counter,
                "officer": done.session.officer,
                "name": done.session.officer_name,
                "csrf": done.session.csrf,  # for a client that is not the page itself
            }
        )
        response.set_cookie(
            COOKIES[kind],
            done.token,
            max_age=kiosk.officers.session_ms // 1000,
            httponly=True,
            samesite="strict",
        )
        return response

    def sign_out(request: Request, kind: Kind) -> JSONResponse:
        kiosk.officers.sign_out(request.cookies.get(COOKIES[kind]))
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIES[kind], httponly=True, samesite="strict")
        return response

    def staff_page(request: Request, kind: Kind, counter: int, name: str) -> HTMLResponse:
        try:
            kiosk.office.check_counter(counter)
        except KioskError as exc:
            return error_page(request, exc)
        session = session_of(request, kind, counter)
        if session is None:
            return page(
                request,
                "signin.html",
                counter=counter,
                kind=kind,
                officers=kiosk.officers.names(counter),
            )
        current = kiosk.office.current(counter, kiosk.now_ms())
        note = None if current is None else kiosk.office.handover_note(current.id)
        return page(
            request, name, counter=counter, session=session, csrf=session.csrf, handover=note
        )

    # the counter page and the rating device, then their API

    @app.get("/counter/{counter}", response_class=HTMLResponse)
    def counter_page(request: Request, counter: int) -> HTMLResponse:
        return staff_page(request, "staff", counter, "counter.html")

    @app.get("/rate/{counter}", response_class=HTMLResponse)
    def rate_page(request: Request, counter: int) -> HTMLResponse:
        return staff_page(request, "rate", counter, "rate.html")

    @app.post("/api/counters/{counter}/session")
    def counter_sign_in(counter: int, body: SignIn) -> JSONResponse:
        return sign_in("staff", counter, body)

    @app.post("/api/counters/{counter}/signout")
    def counter_sign_out(request: Request, counter: int) -> JSONResponse:
        return sign_out(request, "staff")

    @app.post("/api/counters/{counter}/{action}")
    def counter_action(
        request: Request, counter: int, action: str, body: CounterIn | None = None
    ) -> dict[str, Any]:
        session = signed_in(request, "staff", counter)
        body = body or CounterIn()
        return kiosk.counter(
            counter,
            action,
            officer=session.officer,
            service=body.service,
            number=body.number,
            note=body.note,
        )

    @app.post("/api/ratings/{counter}/session")
    def rating_sign_in(counter: int, body: SignIn) -> JSONResponse:
        return sign_in("rate", counter, body)

    @app.post("/api/ratings/{counter}/signout")
    def rating_sign_out(request: Request, counter: int) -> JSONResponse:
        return sign_out(request, "rate")

    @app.post("/api/ratings", status_code=201)
    def rate(request: Request, body: RatingIn) -> dict[str, Any]:
        signed_in(request, "rate", body.counter)
        return kiosk.rate(body.counter, body.level, body.ticket_id)


def _clock(now_ms: int, tz: str, lang: str) -> dict[str, str]:
    """The hall clock as the page opens (display.js keeps it going): 09:05, Thứ Hai, 23/11/2026."""
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    day = (DAYS_EN if lang == "en" else DAYS_VI)[local.weekday()]
    return {"time": local.strftime("%H:%M"), "date": f"{day[0].upper()}{day[1:]}, {local:%d/%m/%Y}"}


async def _stream(kiosk: Kiosk) -> AsyncIterator[str]:
    """A snapshot now and after every change; a comment line keeps idle proxies open.

    The version is polled on the event loop rather than waited for in a thread:
    a hall with a dozen screens must not use up a thread pool.
    """
    seen, idle_s = -1, 0.0
    while not kiosk.changes.closed:
        if kiosk.changes.version != seen:
            seen, idle_s = kiosk.changes.version, 0.0
            yield f"data: {json.dumps(kiosk.snapshot(), ensure_ascii=False)}\n\n"
        elif idle_s >= SSE_KEEPALIVE_S:
            idle_s = 0.0
            yield ": keepalive\n\n"
        await asyncio.sleep(SSE_POLL_S)
        idle_s += SSE_POLL_S


class WebServer:
    """uvicorn in a thread of the agent, bound to the configured host and port."""

    def __init__(self, kiosk: Kiosk, host: str, port: int) -> None:
        config = uvicorn.Config(
            create_app(kiosk),
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="kiosk-web", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except (OSError, SystemExit) as exc:  # a port in use must not take the kiosk down
            log.error("kiosk web server stopped: %s", exc)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    def close(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
