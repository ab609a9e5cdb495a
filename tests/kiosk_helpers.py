"""Counter officers for kiosk tests: the configuration entry and a sign-in over HTTP."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from kiosk.officers import hash_pin

PIN = "2468"
OFFICER = {"id": "can-bo-an", "name": "Nguyễn Văn An", "pin_hash": hash_pin(PIN)}
OFFICERS = [OFFICER]


def counter_headers(base: str, counter: int, kind: str = "counters") -> dict[str, str]:
    """Sign in at ``counter`` (``kind`` "counters" or "ratings"): the cookie and CSRF headers
    that a later change must carry."""
    req = urllib.request.Request(
        f"{base}/api/{kind}/{counter}/session",
        json.dumps({"officer": OFFICER["id"], "pin": PIN}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
    return {"Cookie": cookie, "X-CSRF-Token": body["csrf"]}
