"""The answer's language and the security headers, as plain ASGI.

`?lang=en` switches the language and a cookie remembers it; Vietnamese by
default. Every answer gets the security headers it does not set itself.
Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs every
request's app in a task of its own behind a memory stream: two such layers
cost a request about a millisecond of GIL, as much as a shared dashboard page.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller import i18n

YEAR_S = 365 * 86400


class LanguageAndHeaders:
    def __init__(self, app: ASGIApp, *, cookie: str, headers: Mapping[str, str]) -> None:
        self.app = app
        self.cookie = cookie
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        asked = conn.query_params.get("lang")
        lang = i18n.language(asked or conn.cookies.get(self.cookie))
        scope.setdefault("state", {})["lang"] = lang
        remember = self._cookie(asked) if asked in i18n.LANGS else None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if remember is not None:
                    headers.append("set-cookie", remember)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cookie(self, lang: str) -> str:
        """The Set-Cookie value Starlette's own ``set_cookie`` writes."""
        carrier = Response()
        carrier.set_cookie(self.cookie, lang, max_age=YEAR_S, httponly=True, samesite="lax")
        return carrier.headers["set-cookie"]
