"""The stream server live voice and station relays go through: mounts and their URLs.

Xaso distributes streams through Icecast (cli/brokers/icecast.py runs one for
tests and the demo; a site runs Debian's icecast2). The controller alone knows
the source password and sources every mount; each device pulls a mount with
its own credentials, which Icecast posts to ``/api/streams/listener-auth``
here and admits only when the site's registry says they are a device's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request, Response

from controller.radio.clip_server import Authenticate
from controller.settings import ControllerSettings, SettingsError

OPUS_BITRATE = "48k"
PAGE_US = 100_000  # an Ogg page every 100 ms: Icecast passes pages, not packets
LISTENER_AUTH_PATH = "/api/streams/listener-auth"
ADMIT_HEADER = "icecast-auth-user"  # Icecast's ``auth_header`` option, answered "1"
MAX_AUTH_BODY = 8192  # Icecast posts a few short fields


def opus_ogg_args(application: str = "voip") -> list[str]:
    """The one Opus/Ogg encoding every mount carries (live voice, station pulls): mono,
    48 kHz, 20 ms frames, a page every 100 ms, flushed as it comes."""
    argv = ["-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", OPUS_BITRATE]
    argv += ["-application", application, "-frame_duration", "20"]
    return [*argv, "-page_duration", str(PAGE_US), "-flush_packets", "1"]


class StreamServerError(Exception):
    """No stream server is configured, or its settings cannot be used."""


@dataclass(frozen=True)
class StreamServer:
    """One Icecast: ``url`` is where devices pull and the controller sources."""

    url: str
    source_password: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise StreamServerError(
                f"[stream] url {self.url!r}: give the stream server as http://host:port"
            )
        if not self.source_password:
            raise StreamServerError("the stream server's source password is empty")

    def new_mount(self, kind: str = "live") -> str:
        """A fresh mount name nobody can guess (``/live-3f9c….ogg``)."""
        if not kind.isalnum():
            raise StreamServerError(f"mount kind {kind!r}: letters and digits only")
        return f"/{kind}-{secrets.token_hex(8)}.ogg"

    def source_url(self, mount: str) -> str:
        """Where the controller's ffmpeg sends a mount (its ``icecast://`` protocol)."""
        parts = urlsplit(self.url)
        password = quote(self.source_password, safe="")
        return f"icecast://source:{password}@{parts.netloc}{_checked(mount)}"

    def listener_url(self, mount: str) -> str:
        """What a device is told to pull; it adds its own credentials (``device_auth``)."""
        return self.url.rstrip("/") + _checked(mount)


def configured_stream_server(settings: ControllerSettings) -> StreamServer | None:
    """The site's stream server from ``[stream]``, or None when it has none."""
    if not settings.stream.url:
        return None
    path = settings.path(settings.stream.source_password_file)
    where = f"{path} ([stream] source_password_file)"
    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read the source password: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{where}: not text; write the source password alone") from None
    try:
        return StreamServer(settings.stream.url, password)
    except StreamServerError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _checked(mount: str) -> str:
    if not (mount.startswith("/") and mount[1:].replace("-", "").replace(".", "").isalnum()):
        raise StreamServerError(f"mount {mount!r}: not a mount name made by new_mount")
    return mount


def listener_auth_router(authenticate: Authenticate) -> APIRouter:
    """Icecast's ``listener_add`` callback: admit a listener only with a device's credentials.

    Icecast posts form fields and reads the answer's headers alone: 200 with
    ``icecast-auth-user: 1`` admits; anything else refuses, with a reason for
    its log in ``icecast-auth-message``.
    """
    router = APIRouter()

    @router.post(LISTENER_AUTH_PATH, include_in_schema=False)
    async def listener_auth(request: Request) -> Response:
        body = await request.body()
        fields = _form(body) if len(body) <= MAX_AUTH_BODY else {}
        if fields.get("action") != "listener_add":
            return _refuse("not a listener_add request")
        user, password = fields.get("user", ""), fields.get("pass", "")
        if not user or not authenticate(user, password):
            return _refuse("device credentials required")
        return Response(status_code=200, headers={ADMIT_HEADER: "1"})

    return router


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[0] for key, values in parsed.items() if len(values) == 1}


def _refuse(why: str) -> Response:
    return Response(status_code=200, headers={"icecast-auth-message": why})
