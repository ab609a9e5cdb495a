"""The body guard (controller/web/guard.py) against the real app under uvicorn.

Bodies go over a raw socket, streamed from a loop (never built in memory),
so the test sees exactly how much the server took before it answered. What
the app spools to disk is measured by counting what is written to
starlette's SpooledTemporaryFile, the only place a form's file goes.
"""

from __future__ import annotations

import logging
import select
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import starlette.formparsers

from tests.auth_helpers import ADMIN_PASSWORD, Controller, form_csrf
from tests.http_helpers import serve

MB = 1_000_000
BOUNDARY = "xasoboundary"
CHUNK = b"\0" * 65536


class Spooled(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """Starlette's spool file, counting every byte written to it."""

    written = 0

    def write(self, data: Any) -> int:
        Spooled.written += len(data)
        return super().write(data)


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[Spooled]:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # and anything else goes here
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", Spooled)
    Spooled.written = 0
    return Spooled


@pytest.fixture
def app_url(controller: Controller) -> Iterator[str]:
    with serve(controller.app) as url:
        yield url


def _head(path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: controller"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _multipart_start() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


def post_stream(
    url: str, path: str, headers: dict[str, str], total: int, *, chunked: bool
) -> tuple[int, int]:
    """POST `total` bytes of a multipart file, a chunk at a time, until the server answers.

    Returns the status and the body bytes sent before the answer.
    """
    parts = urlsplit(url)
    sent = 0
    answer = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        content_type = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        sock.sendall(_head(path, {**headers, **content_type}, None if chunked else total))
        first = _multipart_start()
        while sent < total and not answer:
            piece = first if sent == 0 else CHUNK
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            except OSError:  # the server closed its side: read what it said
                break
            sent += len(piece)
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answer = sock.recv(65536)
        while b"\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return status, sent


def signed_in_http(url: str) -> tuple[httpx.Client, str]:
    """A browser signed in over real HTTP, and its session's CSRF token."""
    client = httpx.Client(base_url=url, timeout=30)
    page = client.get("/login")
    client.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": form_csrf(page.text)},
    )
    page = client.get("/")
    token = page.text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]
    return client, token


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/login", "/api/clips", "/api/users"])
def test_an_unauthenticated_300_mb_body_is_refused_before_it_is_read(
    app_url: str, spooled: type[Spooled], path: str, chunked: bool
) -> None:
    status, sent = post_stream(app_url, path, {}, 300 * MB, chunked=chunked)
    # /login is public: its body is read, up to the small cap; elsewhere nothing is.
    assert status == (413 if path == "/login" else 401), status
    assert sent < 8 * MB, sent  # what the socket buffers took before the answer
    assert spooled.written == 0
    assert list(Path(tempfile.gettempdir()).iterdir()) == []


def test_a_signed_in_upload_keeps_its_large_cap_and_the_small_one_holds_elsewhere(
    app_url: str, spooled: type[Spooled], controller: Controller
) -> None:
    client, token = signed_in_http(app_url)
    cookie = f"xaso_session={client.cookies['xaso_session']}"
    session = {"Cookie": cookie, "X-CSRF-Token": token}
    limit = controller.app.state.xaso.station.library.settings.max_input_bytes
    # Over the clip cap: refused from its Content-Length, before a byte.
    status, sent = post_stream(app_url, "/api/clips", session, limit + MB, chunked=False)
    assert status == 413 and sent < 8 * MB and spooled.written == 0
    # The small cap everywhere else, signed in or not, chunked or not.
    for chunked in (False, True):
        status, sent = post_stream(app_url, "/api/users", session, 300 * MB, chunked=chunked)
        assert status == 413 and sent < 8 * MB
    # A wrong CSRF header is refused before the body; a form without one is kept small.
    wrong = {"Cookie": cookie, "X-CSRF-Token": "nope"}
    assert post_stream(app_url, "/api/clips", wrong, 300 * MB, chunked=True)[0] == 403
    assert post_stream(app_url, "/api/clips", {"Cookie": cookie}, 300 * MB, chunked=True)[0] == 413
    assert spooled.written <= 64 * 1024
    refused = client.post("/api/users", content=b"x" * 70_000, headers={"X-CSRF-Token": token})
    body = refused.json()
    assert refused.status_code == 413 and body["code"] == "error.too_large"
    assert body["vi"] == "Yêu cầu quá lớn." and body["en"] == "The request is too large."


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def loud(self) -> list[logging.LogRecord]:
        """Warnings and worse from the web stack (the station's own retries are not ours)."""
        return [
            r
            for r in self.records
            if r.levelno >= logging.WARNING
            and (r.exc_info or not r.name.startswith("controller.radio"))
        ]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.error"),
    ]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def abandon(url: str, path: str, headers: dict[str, str], declared: int, send: int) -> None:
    """Start a POST of `declared` bytes, send `send` of them, and hang up."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(_head(path, headers, declared))
        sock.sendall(_multipart_start() + b"\0" * (send - len(_multipart_start())))
        time.sleep(0.3)


@pytest.mark.parametrize("who", ["signed-in upload", "sign-in form"])
def test_a_client_that_hangs_up_mid_upload_is_one_warning_line(
    app_url: str, spooled: type[Spooled], records: Records, who: str
) -> None:
    content_type = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if who == "signed-in upload":
        client, token = signed_in_http(app_url)
        headers = {
            "Cookie": f"xaso_session={client.cookies['xaso_session']}",
            "X-CSRF-Token": token,
        }
        abandon(app_url, "/api/clips", {**headers, **content_type}, 5 * MB, 1 * MB)
    else:
        abandon(app_url, "/login", content_type, 60_000, 20_000)
    deadline = time.monotonic() + 10
    while not records.loud() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # anything else it would log comes now
    loud = records.loud()
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert "went away" in loud[0].getMessage() and loud[0].levelno == logging.WARNING
    assert all(r.exc_info is None for r in records.records)
