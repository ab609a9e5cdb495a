"""The app's state and the FastAPI dependencies every router uses: who asks, and may they.

    from controller.auth.roles import Permission, Principal
    from controller.deps import DbSession, StationDep, require

    @router.post("/api/broadcasts", responses=ERRORS)
    def play(db: DbSession, who: Annotated[Principal, Depends(require(Permission.BROADCAST))]):
        ...
        audit(db, who, "broadcast.play", f"group:{group}", {...})
        db.commit()

A request is authenticated by `Authorization: Bearer <API token>` or by the
session cookie. A state-changing request (anything but GET, HEAD, OPTIONS)
that rides on the cookie must carry the session's CSRF token, in the header
`X-CSRF-Token` (scripts) or the form field `csrf_token` (forms): a cookie is
sent by the browser on its own, a header or field only by our own pages.
Bearer requests are exempt: browsers never add that header by themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controller.auth.accounts import AuthConfig, session_principal
from controller.auth.roles import Permission, Principal
from controller.auth.security import same
from controller.auth.tokens import token_principal
from controller.fleet.live import LiveFeed
from controller.fleet.service import FleetService
from controller.fleet.shared_pages import SharedPages
from controller.i18n import Refusal
from controller.queue.bookings import Bookings
from controller.queue.ticket_status import TicketStatuses, ViewLimit
from controller.radio.station import Station
from controller.radio.streams import StreamServer
from controller.settings import ControllerSettings
from controller.site.directory import ProvisioningError

SESSION_COOKIE = "xaso_session"
LOGIN_COOKIE = "xaso_login"
LANG_COOKIE = "xaso_lang"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass
class AppState:
    """What `create_app` builds once and every request reads (`request.app.state.xaso`)."""

    settings: ControllerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    auth: AuthConfig
    secret: bytes
    clock: Callable[[], float] = time.time
    station: Station | None = None  # the broadcasting services (controller/radio/station.py)
    fleet: FleetService | None = None  # alerts, retention, registry mirror (fleet/service.py)
    live: LiveFeed | None = None  # the live pages' one poll loop (fleet/live.py)
    pages: SharedPages | None = None  # device-list pages shared by concurrent requests
    bookings: Bookings | None = None  # bookings ahead (queue/bookings.py)
    streams: StreamServer | None = None  # live voice's Icecast (radio/streams.py), if any
    tickets: TicketStatuses | None = None  # citizens' ticket pages (queue/ticket_status.py)
    ticket_views: ViewLimit | None = None  # their views per caller's address

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.xaso
    return state


def get_db(request: Request) -> Iterator[Session]:
    """One database session per request; routes commit what they change."""
    with app_state(request).sessions() as db:
        yield db


DbSession = Annotated[Session, Depends(get_db)]


def client_ip(request: Request) -> str:
    """The caller's address (uvicorn has applied X-Forwarded-For from trusted proxies)."""
    return request.client.host if request.client else ""


async def submitted_csrf(request: Request) -> str:
    """The CSRF token a state-changing request carries, from its header or form field."""
    if request.method in SAFE_METHODS:
        return ""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(FORM_TYPES):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def header_principal(request: Request, db: Session) -> Principal | None:
    """The caller from the headers alone (API token or session cookie), no body read.

    A bad token is refused (401); a missing, expired or unknown cookie is None.
    The body guard (controller/web/guard.py) asks this before it lets a body in.
    """
    state = app_state(request)
    ip = client_ip(request)
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        who = token_principal(db, token.strip(), ip, state.now_ms())
        if scheme.lower() != "bearer" or who is None:
            raise Refusal(401, "error.bad_token", headers={"WWW-Authenticate": "Bearer"})
        return who
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    return session_principal(db, state.auth, cookie, ip, state.now_ms())


def optional_principal(
    request: Request, db: DbSession, csrf: Annotated[str, Depends(submitted_csrf)]
) -> Principal | None:
    """The caller if signed in (or holding a token), else None; checks CSRF on cookies."""
    who = header_principal(request, db)
    if who is None:
        return None
    cookie = who.kind == "user"
    if cookie and request.method not in SAFE_METHODS and not same(csrf, who.csrf_token):
        raise Refusal(403, "error.csrf")
    request.state.principal = who
    return who


def current_principal(
    who: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if who is None:
        raise Refusal(401, "error.not_signed_in", headers={"WWW-Authenticate": "Bearer"})
    return who


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency: the caller, if their role (or token) allows `permission`; else 403."""

    def check(who: CurrentPrincipal) -> Principal:
        if not who.can(permission):
            raise Refusal(403, "error.forbidden")
        return who

    check.__name__ = f"require_{permission.value}"
    return check


def get_station(request: Request) -> Station:
    """The broadcasting services `create_app` built (controller/radio/station.py)."""
    station = app_state(request).station
    assert station is not None  # create_app builds it before the app serves
    return station


StationDep = Annotated[Station, Depends(get_station)]


def commune_names(request: Request) -> dict[str, str]:
    """The site's communes, id to name; none (one commune runs the controller, or no
    site yet) is an empty dict."""
    try:
        return {c.id: c.name for c in get_station(request).site.communes()}
    except (ProvisioningError, OSError):
        return {}


Communes = Annotated[dict[str, str], Depends(commune_names)]


def asked_commune(
    who: Principal, communes: dict[str, str], asked: str | None, other: str
) -> str | None:
    """The commune a request is about: a commune user's own (naming another is a 403 with
    the message ``other``); the province's own (None), or the one it names."""
    if not asked:
        return who.commune
    if who.commune is not None and asked != who.commune:
        raise Refusal(403, other)
    if asked not in communes:
        raise Refusal(422, "error.bad_commune", commune=asked[:48])
    return asked
