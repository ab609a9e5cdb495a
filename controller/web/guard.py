"""The body guard: who asks and how much they may send, before a byte of the body is read.

A pure ASGI middleware, not a FastAPI dependency: FastAPI parses a route's
`Form()` and body parameters before it calls any dependency, and a
dependency that reads the form (to find its CSRF field) has read the body by
then, so a check there comes after the disk is full. The guard sits inside
the language, security-header and metrics middlewares (its refusals are
rendered, counted and bilingual like every other) and before routing.

For a request that carries a body (Content-Length above 0, or chunked) with
a state-changing method, in this order, from the headers alone:

0. A public path (`/login`, whose own CSRF is a signed cookie, and the
   citizens' booking) takes the small cap whatever the headers say: a
   phone's stale token or cookie must not turn a booking into a 401.
1. `Authorization`: a valid API token, else 401 (a bad token never gets in).
2. The session cookie: a live session, else 401. Icecast's listener check
   carries the listener's Basic credentials and is let through to its route. With a live session the
   `X-CSRF-Token` header, when sent, must match (403); with no header the body
   must be a form (403 otherwise), whose `csrf_token` field the dependency
   checks after reading it under the small cap.
3. The cap: `SMALL_CAP` (64 KiB) for every request; a route in `large` (the
   clip upload) gets its own cap only when step 1 passed or the CSRF header
   matched. A declared Content-Length over the cap is refused at once (413);
   the bytes received are counted as well (chunked bodies declare nothing),
   and the request is refused with 413 when they pass the cap.

A client that goes away mid-body is one warning line, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.auth.security import same
from controller.deps import (
    CSRF_HEADER,
    FORM_TYPES,
    SAFE_METHODS,
    app_state,
    header_principal,
)
from controller.i18n import Refusal
from controller.radio.streams import LISTENER_AUTH_PATH

log = logging.getLogger(__name__)

SMALL_CAP = 64 * 1024  # any form or JSON body of the app fits many times over
# no session yet (the login's CSRF is its own), or none ever (a citizen booking): small cap only
PUBLIC_WITH_BODY = frozenset(
    {"/login", "/dat-lich", "/dat-lich/huy", "/api/public/bookings", "/api/public/bookings/cancel"}
)
# Icecast asking about a listener: it forwards the listener's own Basic
# credentials, which are no API token; the route checks them as a device's.
DEVICE_CHECKED = frozenset({LISTENER_AUTH_PATH})

Answer = Callable[[Request, Refusal], Response]


@dataclass(frozen=True)
class Cap:
    """A route's own body cap, and how a Content-Length over it is refused."""

    bytes: int
    refusal: Refusal = field(default_factory=lambda: Refusal(413, "error.too_large"))


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the bytes counted pass the cap; answered 413."""

    def __init__(self) -> None:
        super().__init__(413)


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def has_body(scope: Scope) -> bool:
    length = declared_length(scope)
    chunked = any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))
    return chunked or (length is not None and length > 0)


class BodyGuard:
    def __init__(
        self, app: ASGIApp, *, answer: Answer, large: Mapping[tuple[str, str], Cap]
    ) -> None:
        self.app = app
        self.answer = answer
        self.large = dict(large)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cap = Cap(SMALL_CAP)
        if has_body(scope) and scope["method"] not in SAFE_METHODS:
            try:
                trusted = await run_in_threadpool(self._admit, request)
            except Refusal as refusal:
                await self.answer(request, refusal)(scope, receive, send)
                return
            except OperationalError as exc:  # as the app's handler would, which is further in
                log.error("database error on %s %s: %s", scope["method"], scope["path"], exc)
                await self.answer(request, Refusal(503, "error.database"))(scope, receive, send)
                return
            key = (scope["method"], scope["path"])
            if trusted and key in self.large:
                cap = self.large[key]
        length = declared_length(scope)
        if length is not None and length > cap.bytes:
            await self.answer(request, cap.refusal)(scope, receive, send)
            return
        await self._run(scope, receive, send, cap.bytes)

    def _admit(self, request: Request) -> bool:
        """Raise the Refusal for a body that may not come in; True if it may be large."""
        if request.url.path in DEVICE_CHECKED or request.url.path in PUBLIC_WITH_BODY:
            return False  # small cap; whoever calls, signed in or not, stale token or not
        with app_state(request).sessions() as db:
            who = header_principal(request, db)
        if who is not None and who.kind == "token":
            return True
        if who is None:
            raise Refusal(401, "error.not_signed_in", headers={"WWW-Authenticate": "Bearer"})
        header = request.headers.get(CSRF_HEADER)
        if header:
            if not same(header, who.csrf_token):
                raise Refusal(403, "error.csrf")
            return True
        if not request.headers.get("content-type", "").startswith(FORM_TYPES):
            raise Refusal(403, "error.csrf")
        return False

    async def _run(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        received = 0
        disconnected = False
        started = False

        async def counted() -> Message:
            nonlocal received, disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            elif message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception as exc:  # after a disconnect, whatever broke broke because of it
            if not disconnected and not isinstance(exc, ClientDisconnect):
                raise
            self._gone(scope, received, exc)
            if not started:  # the middlewares above want an answer; it goes nowhere
                await Response(status_code=400)(scope, receive, send)
            return
        if disconnected:
            self._gone(scope, received, None)

    @staticmethod
    def _gone(scope: Scope, received: int, exc: BaseException | None) -> None:
        why = f" ({type(exc).__name__})" if exc is not None else ""
        # a page left while a GET streams (the live pages' /live) is how those end: no news
        level = logging.DEBUG if scope["method"] in ("GET", "HEAD") else logging.WARNING
        log.log(
            level,
            "client went away during %s %s after %d body bytes%s",
            scope["method"],
            scope["path"],
            received,
            why,
        )
