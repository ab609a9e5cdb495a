"""Signing in and out, and `/api/me` (the home page `/` is the dashboard, routes/fleet.py).

The sign-in form is protected against login CSRF by a signed double submit
(`security.login_csrf`): a random cookie, and its HMAC in the form.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from controller.auth.accounts import close_session, open_session, sign_in
from controller.auth.audit import audit
from controller.auth.roles import Principal
from controller.auth.security import login_csrf, new_secret, same
from controller.deps import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    CurrentPrincipal,
    DbSession,
    app_state,
    client_ip,
    optional_principal,
)
from controller.i18n import Refusal
from controller.web.routes import ERRORS, render

router = APIRouter()


class Me(BaseModel):
    username: str
    display_name: str
    role: str
    kind: str
    permissions: list[str]


def _safe_next(target: str) -> str:
    """Only a path on this site: no open redirect to another one."""
    ok = target.startswith("/") and not target.startswith(("//", "/\\")) and len(target) < 2000
    return target if ok and target.isprintable() else "/"


def _login_page(
    request: Request, status_code: int = 200, error: Refusal | None = None, next_path: str = "/"
) -> HTMLResponse:
    nonce = new_secret()
    response = render(
        request,
        "login.html",
        status_code=status_code,
        login_csrf=login_csrf(app_state(request).secret, nonce),
        error=error,
        next_path=_safe_next(next_path),
    )
    secure = request.url.scheme == "https"
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="lax", secure=secure
    )
    if error is not None:
        response.headers.update(error.headers)
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form(
    request: Request,
    who: Annotated[Principal | None, Depends(optional_principal)],
    next: str = "/",
) -> Response:
    if who is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, next_path=next)


@router.post("/login", response_class=HTMLResponse, include_in_schema=False)
def login(
    *,
    request: Request,
    db: DbSession,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    state = app_state(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not same(csrf_token, login_csrf(state.secret, nonce)):
        return _login_page(request, 403, Refusal(403, "login.expired_form"), next)
    ip = client_ip(request)
    try:
        user = sign_in(db, state.auth, username, password, ip=ip, now_ms=state.now_ms())
    except Refusal as refusal:
        return _login_page(request, refusal.status, refusal, next)
    token, _row = open_session(db, state.auth, user, ip, state.now_ms())
    audit(
        db,
        None,
        "session.login",
        f"user:{user.username}",
        at_ms=state.now_ms(),
        ip=ip,
        actor_name=user.username,
        commune=user.commune,
    )
    db.commit()
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=state.auth.session_ms // 1000,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, db: DbSession, who: CurrentPrincipal) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if who.kind == "user" and cookie:
        close_session(db, cookie)
        audit(db, who, "session.logout", f"user:{who.username}")
        db.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/api/me", response_model=Me, tags=["session"], responses=ERRORS)
def me(who: CurrentPrincipal) -> Me:
    """Who the caller is (session or API token) and what they may do."""
    return Me(
        username=who.username,
        display_name=who.display_name,
        role=who.role.value,
        kind=who.kind,
        permissions=sorted(p.value for p in who.permissions),
    )
