"""What every router of the controller shares: pages, the menu, error shapes.

A router module (fleet.py, clips.py, ...) defines `router = APIRouter()` and
is listed in `controller.app.ROUTERS`. Its pages extend `base.html` and are
rendered with `render(request, "fleet.html", devices=...)`; its menu entry is
a `NavItem` added to `NAV` below; its JSON routes declare `responses=ERRORS`
(or a subset) so that the OpenAPI documents the bilingual errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from controller import i18n
from controller.auth.roles import Permission, Principal
from controller.site.directory import ProvisioningError
from controller.web.names import group_name
from controller.web.paging import listed_acks

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # an i18n key
    permission: Permission | None = None  # None: every signed-in user


NAV: list[NavItem] = [
    NavItem("/", "nav.home"),
    NavItem("/alerts", "alerts.title", Permission.VIEW_FLEET),
    NavItem("/reports", "reports.title", Permission.VIEW_REPORTS),
    NavItem("/broadcasts", "nav.broadcasts", Permission.BROADCAST),
    NavItem("/live-voice", "nav.live_voice", Permission.BROADCAST),
    NavItem("/console", "nav.console", Permission.MANAGE_DEVICES),
    NavItem("/schedules", "nav.schedules", Permission.VIEW_FLEET),
    NavItem("/clips", "nav.clips", Permission.MANAGE_CLIPS),
    NavItem("/stations", "nav.stations", Permission.BROADCAST),
    NavItem("/bulletins", "nav.bulletins", Permission.MANAGE_SCHEDULES),
    NavItem("/approvals", "nav.approvals", Permission.VIEW_FLEET),
    NavItem("/users", "nav.users", Permission.MANAGE_USERS),
    NavItem("/tokens", "nav.tokens", Permission.MANAGE_USERS),
    NavItem("/audit", "nav.audit", Permission.VIEW_AUDIT),
]


class ErrorBody(BaseModel):
    """Every error the JSON API returns: both languages in `detail`, and each apart."""

    detail: str
    code: str
    vi: str
    en: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad request",
        401: "Not signed in, or a bad API token",
        403: "Not allowed for this role, or a missing CSRF token",
        404: "No such item",
        409: "Conflicts with the current state",
        422: "Invalid input",
        429: "Too many failed sign-ins",
        502: "The MQTT broker did not reload its password and ACL files",
        503: "No MQTT broker connection, or the site is not set up",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}


ERRORS = error_responses(401, 403, 422)


def lang_of(request: Request) -> i18n.Lang:
    lang: i18n.Lang = getattr(request.state, "lang", i18n.DEFAULT)
    return lang


def local_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, LOCAL_TZ).strftime("%d/%m/%Y %H:%M:%S")


def target_name(
    lang: i18n.Lang, kind: str, ident: str, communes: Mapping[str, str] | None = None
) -> str:
    """A group or a speaker as people say it: the group every speaker is in is the commune
    (with ``communes``, the site's, it is the province, and a commune's group its name)."""
    if kind == "group" and ident == "all":
        return i18n.t(lang, "target.province" if communes else "target.all")
    if kind == "group" and communes and ident in communes:
        return i18n.t(lang, "target.commune", name=communes[ident])
    return i18n.t(lang, f"target.{kind}", id=ident)


def commune_names(request: Request) -> dict[str, str]:
    """The site's communes by id, for the names of their groups; none on a one-commune site."""
    station = getattr(getattr(request.app.state, "xaso", None), "station", None)
    try:
        return {c.id: c.name for c in station.site.communes()} if station else {}
    except (ProvisioningError, OSError):
        return {}


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page in the caller's language, with the menu their role allows."""
    lang = lang_of(request)
    who: Principal | None = getattr(request.state, "principal", None)
    nav = [n for n in NAV if who is not None and (n.permission is None or who.can(n.permission))]

    def t(key: str, **params: object) -> str:
        return i18n.t(lang, key, **params)

    communes = commune_names(request)
    other = "en" if lang == "vi" else "vi"
    if request.method == "GET":
        switch = f"{request.url.path}?{urlencode({**request.query_params, 'lang': other})}"
    else:
        switch = f"{'/' if who else '/login'}?lang={other}"

    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "lang": lang,
            "switch_url": switch,
            "t": t,
            "who": who,
            "csrf": who.csrf_token if who else "",
            "nav": nav,
            "local_time": local_time,
            "listed_acks": listed_acks,
            "target": lambda kind, ident: target_name(lang, kind, ident, communes),
            "group": lambda ident: group_name(lang, ident, communes),
            **context,
        },
        status_code=status_code,
    )
    return response
