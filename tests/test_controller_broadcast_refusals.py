"""What the broadcasting API refuses: each role's limits, session calls without CSRF, bad input.

The app with its fleet registered and no broker (the `offline` fixture), on
SQLite and on PostgreSQL, called with API tokens of each role; the app and its
calls in tests/broadcast_api_helpers.py.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import PASSWORD, ROLES, Ctl, entry, group, refused


def test_the_roles_hold_and_session_calls_need_their_csrf_token(offline: Ctl) -> None:
    sha = "a" * 64
    # a technician cannot broadcast, an officer cannot change schedules or clips
    for role, method, path, body in (
        ("technician", "POST", "/api/broadcasts/emergency",
         {"targets": group("all"), "clip_sha256": sha, "confirm": True}),
        ("technician", "POST", "/api/broadcasts", {"targets": group("all"), "clip_sha256": sha}),
        ("technician", "POST", "/api/broadcasts/stop", {"targets": group("all")}),
        ("officer", "POST", "/api/broadcasts/emergency",
         {"targets": group("all"), "clip_sha256": sha, "confirm": True}),
        ("officer", "POST", "/api/schedules", entry(sha)),
        ("officer", "PUT", "/api/schedules/1", entry(sha)),
        ("officer", "DELETE", "/api/schedules/1", None),
        ("officer", "POST", "/api/schedules/preview",
         {"entry": entry(sha), "start": "2030-01-06"}),
        ("technician", "POST", "/api/schedules", entry(sha)),
        ("officer", "POST", "/api/clips/tts", {"text": "Xin chào"}),
        ("officer", "DELETE", f"/api/clips/{sha}", None),
        ("officer", "POST", "/api/bulletins",
         {"external_id": "1", "title": "T", "level": "normal", "targets": group("all"),
          "clip_sha256": sha}),
        ("officer", "POST", "/api/bulletins/1/decline", {}),
    ):  # fmt: skip
        answer = offline.call(role, method, path, json=body)
        refused(answer, 403, "error.forbidden")
    # everyone who sees the fleet sees what plays where
    for role in ROLES:
        assert offline.call(role, "GET", "/api/schedules").json() == []
        calendar = offline.call(role, "GET", "/api/calendar", params={"start": "2030-01-06"})
        assert [p["device"] for p in calendar.json()] == ["loa-1", "loa-2", "loa-3"]
        assert offline.call(role, "GET", "/api/broadcasts").json() == []
    # pages: a technician gets no broadcast page, an officer no schedule form
    client = TestClient(offline.app)
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    signed = client.post(
        "/login",
        data={"username": "officer", "password": PASSWORD, "csrf_token": csrf.group(1)},
        follow_redirects=False,
    )
    assert signed.status_code == 303
    html = {"accept": "text/html"}
    assert client.get("/broadcasts", headers=html).status_code == 403
    schedules = client.get("/schedules", headers=html)
    assert schedules.status_code == 200 and 'id="new-entry"' not in schedules.text
    assert "/broadcasts" not in client.get("/", headers=html).text  # not in the menu
    # a session call without its CSRF token is refused before anything else
    refused(client.post("/api/clips/tts", json={"text": "Xin chào"}), 403, "error.csrf")


def test_bad_input_on_every_endpoint_is_a_clear_bilingual_4xx(offline: Ctl) -> None:
    bt = "broadcaster"
    wav = tone_file(offline.tmp / "tone.wav", 440, 0.5)
    clip = offline.upload(bt, wav, "Tiếng bíp").json()["sha256"]
    unknown = "f" * 64

    def check(method: str, path: str, body: Any, status: int, code: str | None = None) -> None:
        refused(offline.call(bt, method, path, json=body), status, code)

    # unknown targets and clips
    check("POST", "/api/schedules", entry(clip, target={"kind": "group", "id": "thon-9"}),
          422, "unknown_target")  # fmt: skip
    check("POST", "/api/schedules", entry(unknown), 422, "unknown_clip")
    check("POST", "/api/broadcasts", {"targets": group("thon-9"), "clip_sha256": clip},
          422, "unknown_target")  # fmt: skip
    check("POST", "/api/broadcasts/emergency",
          {"targets": group("all"), "clip_sha256": unknown, "confirm": True},
          404, "clip_not_found")  # fmt: skip
    check(
        "POST",
        "/api/broadcasts/stop",
        {"targets": [{"kind": "device", "id": "kiosk-1"}]},
        422,
        "unknown_target",
    )  # fmt: skip  (a kiosk is not a speaker)
    check("POST", "/api/bulletins",
          {"external_id": "x", "title": "T", "level": "normal", "targets": group("all"),
           "clip_sha256": unknown}, 422, "unknown_clip")  # fmt: skip
    check("POST", "/api/bulletins",
          {"external_id": "x", "title": "T", "level": "normal", "targets": group("nowhere"),
           "clip_sha256": clip}, 422, "unknown_target")  # fmt: skip
    # bad recurrences and times
    check("POST", "/api/schedules", entry(clip, rrule="FREQ=SOMETIMES"), 422, "bad_entry")
    check("POST", "/api/schedules", entry(clip, rrule="FREQ=MINUTELY"), 422, "sched.too_frequent")
    check("POST", "/api/broadcasts", {"targets": group("all"), "stream_url": "ftp://x/y",
          "stream_duration_s": 60}, 422, "error.invalid")  # fmt: skip
    check("POST", "/api/schedules", entry(clip, rrule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"),
          422, "never_fires")  # fmt: skip
    check("POST", "/api/schedules", entry(clip, dtstart="2020-01-01T06:30:00",
          rrule="FREQ=DAILY;COUNT=1"), 422, "never_plays")  # fmt: skip
    check("POST", "/api/schedules", entry(clip, dtstart="hôm nay lúc 6 giờ"), 422, "bad_entry")
    check("POST", "/api/schedules", entry(clip, tz="Mars/Olympus"), 422, "bad_entry")
    check("POST", "/api/schedules", entry(clip, level="normal", priority=8), 422, "bad_priority")
    check("POST", "/api/schedules/preview", {"entry": entry(clip), "start": "2030-02-30"}, 422)
    check("GET", "/api/calendar?start=2030-01-06&days=32", None, 422, "error.invalid")
    check("GET", "/api/calendar?start=2030-01-06&device=loa-9", None, 422, "unknown_target")
    # oversized fields and wrong types
    check("POST", "/api/schedules", entry(clip, label="x" * 201), 422, "error.invalid")
    check("POST", "/api/schedules", entry(clip, rrule="FREQ=DAILY;" * 200), 422)
    check("POST", "/api/broadcasts", {"targets": group("all"), "clip_sha256": clip,
          "label": "y" * 201}, 422, "error.invalid")  # fmt: skip
    check("POST", "/api/clips/tts", {"text": "a" * 5001}, 422, "error.invalid")
    check("POST", "/api/broadcasts", {"targets": "all", "clip_sha256": clip}, 422)
    check("POST", "/api/broadcasts", {"targets": [], "clip_sha256": clip}, 422)
    check("POST", "/api/broadcasts", {"targets": group("Thôn 1"), "clip_sha256": clip}, 422)
    check("POST", "/api/schedules", {**entry(clip), "gain_db": "loud"}, 422, "error.invalid")
    check("POST", "/api/schedules", {**entry(clip), "colour": "red"}, 422, "error.invalid")
    check("PUT", "/api/schedules/abc", entry(clip), 422, "error.invalid")
    check("GET", "/api/broadcasts/not-an-id", None, 422, "error.invalid")
    # an emergency is not sent without its explicit confirmation
    check("POST", "/api/broadcasts/emergency", {"targets": group("all"), "clip_sha256": clip},
          422, "error.invalid")  # fmt: skip
    check("POST", "/api/broadcasts/emergency",
          {"targets": group("all"), "clip_sha256": clip, "confirm": False}, 422)  # fmt: skip
    # missing things
    check("GET", "/api/schedules/12345", None, 404, "entry_not_found")
    check("DELETE", "/api/schedules/12345", None, 404, "entry_not_found")
    check("GET", f"/api/broadcasts/{'0' * 32}", None, 404, "broadcast_not_found")
    check("POST", "/api/bulletins/999/accept", {"play_now": True}, 404, "bulletin_not_found")
    check("DELETE", f"/api/clips/{unknown}", None, 404, "clip_not_found")
    # uploads: not audio, no file, over the limit
    junk = offline.tmp / "notes.txt"
    junk.write_text("không phải âm thanh\n" * 50, encoding="utf-8")
    refused(offline.upload(bt, junk, "Ghi chú"), 422)
    refused(offline.call(bt, "POST", "/api/clips", data={"title": "x"}), 422, "clips.no_file")
    too_big = offline.call(
        bt, "POST", "/api/clips", content=b"x", headers={"content-length": str(10**12)}
    )
    refused(too_big, 413, "clips.too_large")
    refused(offline.upload(bt, wav, " "), 422, "empty_title")
    # nothing above changed anything
    assert offline.call(bt, "GET", "/api/schedules").json() == []
    assert offline.call(bt, "GET", "/api/broadcasts").json() == []
    assert [e.action for e in offline.audit()] == ["clip.upload"]
