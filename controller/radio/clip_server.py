"""Serving prepared clips to devices: ``GET /api/clips/{sha256}`` with Range.

Devices authenticate with HTTP Basic and their own MQTT credentials, checked
against the site's registry. Starlette's FileResponse answers Range requests,
so a download broken by a 4G drop resumes where it stopped.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import FileResponse

from controller.site.broker_files import password_matches
from controller.site.devices import list_devices

_SHA = re.compile(r"^[0-9a-f]{64}$")
Authenticate = Callable[[str, str], bool]


def site_authenticator(site_dir: Path) -> Authenticate:
    """Devices of the site, by the password hash in the registry."""

    def check(username: str, password: str) -> bool:
        for entry in list_devices(site_dir):
            if entry.id == username:
                return password_matches(entry.password_hash, password)
        return False

    return check


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.startswith("Basic "):
        return None
    try:
        user, _, password = (
            base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def clip_router(clip_dir: Path, authenticate: Authenticate) -> APIRouter:
    router = APIRouter()

    @router.get("/api/clips/{sha256}", response_class=FileResponse)
    def get_clip(
        sha256: str, authorization: Annotated[str | None, Header()] = None
    ) -> FileResponse:
        creds = _basic(authorization)
        if creds is None or not authenticate(*creds):
            raise HTTPException(
                401,
                "Cần đăng nhập bằng tài khoản thiết bị / Device credentials required",
                headers={"WWW-Authenticate": 'Basic realm="xaso"'},
            )
        if not _SHA.match(sha256):
            raise HTTPException(422, "Mã tệp không hợp lệ / Not a sha256 clip id")
        matches = sorted(clip_dir.glob(f"{sha256}.*"))
        if not matches:
            raise HTTPException(404, "Không có tệp này / No such clip")
        return FileResponse(matches[0], media_type="application/octet-stream")

    return router
