"""The controller's web application: the one place that wires it.

`create_app(settings)` brings the database to the newest schema (under the
migration lock, or only checks it when `[database] migrate_at_start` is off), builds the
engine, the sign-in configuration and the metrics, and includes every router
in `ROUTERS`. A new area adds its router there, its menu entry to
`controller.web.routes.NAV`, and any background work (MQTT ingest, alerts) to
`SERVICES`, which run for as long as the app does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller import i18n
from controller.auth.accounts import AuthConfig
from controller.auth.passwords import Passwords
from controller.auth.security import LoginPolicy
from controller.db.engine import check_schema, make_engine, session_factory, upgrade
from controller.db.fleet_writes import FleetWrites
from controller.deps import LANG_COOKIE, AppState
from controller.fleet.live import LiveFeed
from controller.fleet.service import FleetService
from controller.fleet.shared_pages import SharedPages
from controller.queue.bookings import Bookings, Wire
from controller.queue.ticket_status import TicketStatuses, ViewLimit
from controller.radio.clip_server import clip_router, site_authenticator
from controller.radio.downward import Downward
from controller.radio.resends import Resends
from controller.radio.resends import policy as resend_policy
from controller.radio.station import Station
from controller.radio.streams import configured_stream_server, listener_auth_router
from controller.settings import ControllerSettings, load_secret
from controller.site.directory import ProvisioningError, Site
from controller.web.guard import BodyGuard, Cap
from controller.web.language import LanguageAndHeaders
from controller.web.metrics import Metrics, MetricsMiddleware, metrics_router
from controller.web.routes import (
    ErrorBody,
    alerts,
    approvals,
    audit,
    booking,
    broadcasts,
    bulletins,
    clips,
    console,
    devices,
    error_responses,
    fleet,
    live,
    live_voice,
    render,
    reports,
    schedules,
    session,
    stations,
    targets,
    ticket_status,
    tokens,
    users,
    webhook_deliveries,
)
from plumbing.heap import long_lived
from protocol.topics import Topics

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "web" / "static"

# Every router of the controller; a new area appends its own.
ROUTERS: list[APIRouter] = [session.router, users.router, tokens.router, audit.router]
ROUTERS += [clips.router, schedules.router, broadcasts.router, bulletins.router, reports.router]
ROUTERS += [devices.router, fleet.router, alerts.router]  # devices first: /devices/new
ROUTERS += [console.router, live.router, webhook_deliveries.router, stations.router]
ROUTERS += [booking.router, ticket_status.router]
ROUTERS += [approvals.router]
ROUTERS += [live_voice.router]
ROUTERS += [targets.router]

# Background work tied to the app's life: each is called with the app's state
# when it starts and returns a context manager that is left when it stops.
# MQTT ingest and alerts go here (e.g. `lambda state: Ingest(state.settings, ...)`).


def run_station(state: AppState) -> AbstractContextManager[None]:
    """The MQTT bus, ack routing and ingest (controller/radio/station.py), for the app's life."""
    assert state.station is not None  # create_app builds it before the app starts
    return state.station.running()


def run_fleet(state: AppState) -> AbstractContextManager[None]:
    """Alert rules, retention, registry mirror (controller/fleet/service.py)."""
    assert state.fleet is not None  # create_app builds it before the app starts
    return state.fleet.running()


def run_resends(state: AppState) -> AbstractContextManager[None]:
    """The current documents, sent again to devices behind on them (controller/radio/resends.py)."""
    station = state.station
    assert station is not None  # create_app builds it before the app starts
    resends = Resends(
        state.sessions,
        station.site,
        station,
        resend_policy(state.settings),
        clock=state.now_ms,
        connected=lambda: station.connected,
    )
    return resends.running(state.settings.documents.check_every_s)


def run_live(state: AppState) -> AbstractContextManager[None]:
    """The live pages' poll loop (controller/fleet/live.py); it idles while no page listens."""
    assert state.live is not None  # create_app builds it before the app starts
    return state.live.running()


def run_pulls(state: AppState) -> AbstractContextManager[None]:
    """One pull per station on air, into its mount (controller/radio/station_pulls.py)."""
    assert state.station is not None  # create_app builds it before the app starts
    pulls = state.station.pulls
    return pulls.running() if pulls is not None else nullcontext()


def run_downward(state: AppState) -> AbstractContextManager[None]:
    """Bulletins and schedules pulled from the province's system (controller/radio/downward.py)."""
    station, upward = state.station, state.settings.upward
    assert station is not None  # create_app builds it before the app starts
    if not upward.url:
        return nullcontext()
    poller = Downward(
        state.sessions,
        upward,
        station.library,
        lambda: station.inbox,
        station.site,
        can_send=lambda: station.connected,
        clock_ms=state.now_ms,
    )
    return poller.running()


def run_bookings(state: AppState) -> AbstractContextManager[None]:
    """Each office's bookings sent again when not delivered, and each morning (queue/)."""
    assert state.bookings is not None  # create_app builds it before the app starts
    return state.bookings.running(state.settings.documents.check_every_s)


SERVICES: list[Callable[[AppState], AbstractContextManager[Any]]] = [
    run_station,
    run_fleet,
    run_resends,
    run_live,
    run_bookings,
    run_pulls,
    run_downward,
]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


class Health(BaseModel):
    status: str
    database: str


def booking_wire(station: Station) -> Wire:
    """The kiosks' booking documents go out signed with the site's key, on its bus."""
    return Wire(
        key=station.site.signing_key,
        topics=lambda: Topics(station.site.root),
        publisher=station,
        peers=queue_peers(station.site),
    )


def auth_config(settings: ControllerSettings) -> AuthConfig:
    sec = settings.security
    return AuthConfig(
        passwords=Passwords(sec.argon2_time_cost, sec.argon2_memory_kib, sec.argon2_parallelism),
        policy=LoginPolicy(
            max_failures=sec.login_max_failures,
            ip_max_failures=sec.login_ip_max_failures,
            window_ms=int(sec.login_window_min * 60_000),
            lockout_ms=int(sec.lockout_min * 60_000),
        ),
        session_ms=int(sec.session_hours * 3_600_000),
        idle_ms=int(sec.session_idle_min * 60_000),
    )


def queue_peers(site: Site) -> Callable[[str], list[str]]:
    """A kiosk's office queue, from the device registry: its kiosks, itself alone if none."""

    def peers(kiosk: str) -> list[str]:
        try:
            devices = site.devices()
        except ProvisioningError:
            return [kiosk]
        queue = next((d.queue for d in devices if d.id == kiosk), "")
        return [d.id for d in devices if queue and d.queue == queue] or [kiosk]

    return peers


def create_app(settings: ControllerSettings, clock: Callable[[], float] = time.time) -> FastAPI:
    """The controller's app for `settings`; `clock` (epoch seconds) can be given in tests."""
    if settings.database.migrate_at_start:
        upgrade(settings.database_url)
    else:
        check_schema(settings.database_url)
    engine = make_engine(settings.database_url)
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        auth=auth_config(settings),
        secret=load_secret(settings),
        clock=clock,
    )
    state.streams = configured_stream_server(settings)
    state.station = Station(settings, state.sessions, state.streams)
    state.fleet = FleetService(settings, state.sessions, clock)
    state.live = LiveFeed(
        state.sessions,
        offline_after_ms=int(settings.alerts.offline_after_min * 60_000),
        clock_ms=state.now_ms,
    )
    writes = FleetWrites(engine)
    state.pages = SharedPages(lambda: writes.version, state.now_ms)
    state.bookings = Bookings(
        settings.booking, state.sessions, state.now_ms, booking_wire(state.station)
    )
    state.tickets = TicketStatuses(state.sessions, queue_peers(state.station.site))
    state.ticket_views = ViewLimit(settings.booking.status_views_per_ip_per_min)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            for service in SERVICES:
                stack.enter_context(service(state))
            stack.enter_context(long_lived())
            yield
        engine.dispose()

    app = FastAPI(
        title="Xaso controller",
        version="1",
        summary="IP radio, queue kiosks and fleet health for a commune or a province.",
        docs_url=None,  # Swagger UI loads from a CDN; the pages stay self-contained
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.xaso = state
    app.state.metrics = metrics
    # Innermost first: the body guard runs after language and metrics, before routing.
    clip_max = state.station.library.settings.max_input_bytes
    upload = Cap(
        clip_max + clips.UPLOAD_OVERHEAD,
        i18n.Refusal(413, "clips.too_large", mb=clip_max // 1_000_000),
    )
    app.add_middleware(BodyGuard, answer=_answer, large={("POST", "/api/clips"): upload})
    _middlewares(app, metrics)
    _error_handlers(app)

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": ErrorBody, "description": "The database cannot be reached"}},
    )
    def healthz() -> Health:
        with state.sessions() as db:
            db.execute(text("SELECT 1"))
        return Health(status="ok", database="ok")

    for router in ROUTERS:
        app.include_router(router)
    app.include_router(metrics_router(metrics))
    app.include_router(
        clip_router(settings.clips_dir, site_authenticator(settings.site_dir)),
        tags=["clips"],
        responses=error_responses(401, 404, 422),
    )
    app.include_router(listener_auth_router(site_authenticator(settings.site_dir)))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _document_body_cap(app)
    return app


def _document_body_cap(app: FastAPI) -> None:
    """Every operation that takes a body can answer 413: the body guard caps them all."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            too_large = {
                "description": "The request body is over the size limit",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                },
            }
            for item in spec["paths"].values():
                for operation in item.values():
                    if "requestBody" in operation:
                        operation["responses"].setdefault("413", too_large)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _middlewares(app: FastAPI, metrics: Metrics) -> None:
    app.add_middleware(LanguageAndHeaders, cookie=LANG_COOKIE, headers=SECURITY_HEADERS)
    app.add_middleware(MetricsMiddleware, metrics=metrics)


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return not path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def _answer(
    request: Request, refusal: i18n.Refusal, extra: dict[str, Any] | None = None
) -> Response:
    """A refusal as a page for a browser, as JSON for a program; both languages always."""
    if _wants_page(request):
        if refusal.status == 401 and request.method == "GET":
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        return render(
            request,
            "error.html",
            status_code=refusal.status,
            message_vi=refusal.text("vi"),
            message_en=refusal.text("en"),
        )
    body = {
        "detail": str(refusal),
        "code": refusal.key,
        "vi": refusal.text("vi"),
        "en": refusal.text("en"),
        **(extra or {}),
    }
    return JSONResponse(body, status_code=refusal.status, headers=refusal.headers)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(i18n.Refusal)
    async def refused(request: Request, exc: i18n.Refusal) -> Response:
        return _answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            ".".join(str(p) for p in err.get("loc", ()) if p != "body") + f": {err.get('msg')}"
            for err in exc.errors()[:10]
        ]
        refusal = i18n.Refusal(422, "error.invalid", problems="; ".join(problems))
        return _answer(request, refusal, {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        key = {404: "error.not_found", 405: "error.method", 413: "error.too_large"}.get(
            exc.status_code, "error.http"
        )
        detail = str(exc.detail)
        if " / " in detail:  # already bilingual (e.g. the clip server's)
            vi, _, en = detail.partition(" / ")
            body = {"detail": detail, "code": "error.http", "vi": vi, "en": en}
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        headers = dict(exc.headers or {})
        refusal = i18n.Refusal(exc.status_code, key, headers=headers, code=exc.status_code)
        return _answer(request, refusal)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> Response:
        log.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return _answer(request, i18n.Refusal(503, "error.database"))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("error on %s %s", request.method, request.url.path)
        return _answer(request, i18n.Refusal(500, "error.server"))


def serve(settings: ControllerSettings) -> int:
    """`xaso controller` in one process: the app under uvicorn until SIGINT or SIGTERM;
    the exit code. (`[http] workers` > 1 goes to controller.serving, from the CLI.)"""
    import uvicorn

    from controller.serving import uvicorn_options

    app = create_app(settings)
    uvicorn.run(app, **uvicorn_options(settings))
    return 0
