"""Clip downloads over HTTP: the only module on the edge that speaks HTTP.

A broken download resumes with ``Range`` from what is already on disk; the
device authenticates with its own MQTT credentials (PROTOCOL.md, "Clip files").
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 64 * 1024


def basic_authorization(username: str, password: str | None) -> str:
    """The device's own credentials as an HTTP Basic ``Authorization`` value."""
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()


class FetchError(Exception):
    """A download that did not complete; what is on disk is kept for a resume."""


class HttpFetcher:
    def __init__(self, username: str, password: str | None, *, timeout_s: float = 30.0) -> None:
        self._auth = basic_authorization(username, password)
        self._timeout_s = timeout_s

    def fetch(self, url: str, part: Path, expected_bytes: int) -> None:
        """Download ``url`` into ``part``, resuming from its current length."""
        have = part.stat().st_size if part.exists() else 0
        if have > expected_bytes:
            part.unlink()
            have = 0
        if have == expected_bytes:
            return
        request = urllib.request.Request(url, headers={"Authorization": self._auth})  # noqa: S310
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as resp:  # noqa: S310
                mode = "ab" if have and resp.status == 206 else "wb"  # 200: the server restarts
                with part.open(mode) as out:
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                        if out.tell() > expected_bytes:
                            raise FetchError(
                                f"{url}: more than the announced {expected_bytes} bytes"
                            )
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # our partial file is not a prefix the server knows
                part.unlink(missing_ok=True)
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise FetchError(f"{url}: {exc}") from None
