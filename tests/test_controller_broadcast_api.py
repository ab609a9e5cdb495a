"""The broadcasting area over HTTP: clips, schedules, broadcasts, bulletins.

The real app (create_app) on SQLite and on PostgreSQL, through FastAPI's
TestClient; callers authenticate with API tokens of each role, as an
integration would. The test that sends runs the app's lifespan against a
real Mosquitto, so the station's bus connects as it does in production.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cli.brokers.mosquitto import free_port
from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.db.auth_tables import AuditEntry
from controller.settings import load_settings
from controller.site.devices import add_device
from controller.site.directory import Site
from tests.audio_helpers import tone_file
from tests.conftest import DEVICES
from tests.test_scheduling import local_ms

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
PASSWORD = "mot-mat-khau-dai"
ROLES = ("admin", "broadcaster", "technician", "officer")


class Ctl:
    """The app, a user and an API token per role, and the calls tests make."""

    def __init__(self, app: FastAPI, tmp: Path) -> None:
        self.app, self.tmp = app, tmp
        self.tokens: dict[str, str] = {}
        state = app.state.xaso
        with state.sessions() as db:
            for role in ROLES:
                user = create_user(
                    db,
                    state.auth.passwords,
                    username=role,
                    display_name=role.title(),
                    role=role,
                    password=PASSWORD,
                    now_ms=state.now_ms(),
                )
                owner = Principal("user", user.id, role, role, Role(role), PERMISSIONS[Role(role)])
                self.tokens[role], _ = create_token(
                    db, owner, f"{role}-token", role, state.now_ms()
                )
            db.commit()
        self.client = TestClient(app)

    @property
    def station(self) -> Any:
        return self.app.state.xaso.station

    def call(self, role: str, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def upload(self, role: str, path: Path, title: str) -> Any:
        with path.open("rb") as f:
            return self.call(
                role, "POST", "/api/clips", files={"file": (path.name, f)}, data={"title": title}
            )

    def audit(self) -> list[AuditEntry]:
        with self.app.state.xaso.sessions() as db:
            return list(db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def make_app(tmp: Path, database_url: str, site: Site, mqtt_port: int) -> FastAPI:
    config = tmp / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{site.dir}"\nclips_dir = "{tmp / "clips"}"\n'
        f'[database]\nurl = "{database_url}"\n[mqtt]\nport = {mqtt_port}\n',
        encoding="utf-8",
    )
    return create_app(load_settings(config))


def register(site: Site, port: int = 1883) -> None:
    for device, (roles, groups) in DEVICES.items():
        add_device(
            site.dir, device, roles, groups, broker_host="127.0.0.1", broker_port=port
        )


@pytest.fixture
def offline(tmp_path: Path, database_url: str, site: Site) -> Iterator[Ctl]:
    """The app with its fleet registered and no broker anywhere (nothing listens on the port)."""
    register(site)
    app = make_app(tmp_path, database_url, site, free_port())
    yield Ctl(app, tmp_path)
    app.state.xaso.engine.dispose()


def refused(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """A bilingual refusal: Vietnamese and English, and the status and code expected."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["vi"] and body["en"] and body["vi"] != body["en"], body
    assert body["detail"] == f"{body['vi']} / {body['en']}"
    if code is not None:
        assert body["code"] == code, body
    return body


def group(name: str) -> list[dict[str, str]]:
    return [{"kind": "group", "id": name}]


def entry(clip: str, **kw: Any) -> dict[str, Any]:
    return {
        "target": {"kind": "group", "id": "thon-1"},
        "clip_sha256": clip,
        "dtstart": "2030-01-06T06:30:00",
        "rrule": "FREQ=DAILY",
        "label": "Bản tin sáng",
        **kw,
    }


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
          422, "bad_entry")  # fmt: skip
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


def test_with_no_broker_the_app_serves_and_sending_is_a_clear_503(offline: Ctl) -> None:
    bt = "broadcaster"
    with offline.client:  # the lifespan runs: the station keeps trying to connect
        clip = offline.upload(bt, tone_file(offline.tmp / "t.wav", 440, 0.5), "Bíp").json()
        assert not offline.station.connected
        body = refused(
            offline.call(bt, "POST", "/api/broadcasts/emergency",
                         json={"targets": group("all"), "clip_sha256": clip["sha256"],
                               "confirm": True}),
            503, "station.no_broker",
        )  # fmt: skip
        assert "MQTT" in body["vi"] and "MQTT" in body["en"]
        refused(offline.call(bt, "POST", "/api/schedules", json=entry(clip["sha256"])), 503)
        assert offline.call(bt, "GET", "/api/schedules").json() == []
        assert offline.call(bt, "GET", "/api/broadcasts").json() == []
        assert offline.client.get("/healthz").json()["status"] == "ok"


@pytest.fixture
def online(
    tmp_path: Path, database_url: str, site: Site, broker: Any
) -> Iterator[Ctl]:
    """The app with its lifespan running, its station connected to a real Mosquitto."""
    app = make_app(tmp_path, database_url, site, broker.port)
    ctl = Ctl(app, tmp_path)
    with ctl.client:
        deadline = time.monotonic() + 30
        while not ctl.station.connected:
            assert time.monotonic() < deadline, "the station did not connect"
            time.sleep(0.05)
        yield ctl
    app.state.xaso.engine.dispose()


def test_clips_schedules_broadcasts_and_bulletins_through_the_api(
    online: Ctl, fleet: Any, probe: Any
) -> None:
    bt = "broadcaster"
    wav = tone_file(online.tmp / "tone.wav", 440, 1.0)
    made = online.upload(bt, wav, "Thông báo tiêm chủng")
    assert made.status_code == 201, made.text
    clip = made.json()
    assert clip["source"] == "upload" and 900 <= clip["duration_ms"] <= 1100
    again = online.upload(bt, wav, "Tên khác")  # the same audio is the same clip
    assert again.json()["sha256"] == clip["sha256"] and again.json()["title"] == clip["title"]
    said = online.call(bt, "POST", "/api/clips/tts", json={"text": "Kính thưa bà con"})
    assert said.status_code == 201 and said.json()["source"] == "tts"
    assert said.json()["title"] == "Kính thưa bà con"
    assert len(online.call(bt, "GET", "/api/clips").json()) == 2
    sha = clip["sha256"]

    # a schedule entry: published signed and retained on the group's topic
    created = online.call(bt, "POST", "/api/schedules", json=entry(sha))
    assert created.status_code == 201, created.text
    e = created.json()
    assert e["target"] == {"kind": "group", "id": "thon-1"} and e["priority"] == 2
    fresh = fleet.probe()  # subscribes after the publish: gets the retained copy
    doc = fresh.wait_for(lambda m: m.topic == "xaso/grp/thon-1/schedule" and m.retain)
    assert [i["id"] for i in doc.json()["body"]["items"]] == [e["item_id"]]
    calendar = online.call(
        "officer", "GET", "/api/calendar", params={"start": "2030-01-06", "days": 2}
    ).json()
    rows = {p["device"]: p["rows"] for p in calendar}
    assert [r["planned_start_ms"] for r in rows["loa-1"]] == [
        local_ms("2030-01-06T06:30:00"), local_ms("2030-01-07T06:30:00"),
    ]  # fmt: skip
    assert rows["loa-2"] == []  # thon-2: not addressed
    # the preview of an unsaved priority entry: it cuts the morning bulletin on loa-1
    loa_1 = {"kind": "device", "id": "loa-1"}
    clash = entry(said.json()["sha256"], target=loa_1, level="priority", rrule="FREQ=DAILY;COUNT=1")
    preview = online.call(
        bt,
        "POST",
        "/api/schedules/preview",
        json={"entry": clash, "start": "2030-01-06", "days": 1},
    ).json()
    assert [p["device"] for p in preview] == ["loa-1"]
    (cut,) = preview[0]["rows"]  # the group's item waits for the priority one
    assert cut["item_id"] == e["item_id"] and cut["conflicted"]
    assert cut["start_ms"] is None or cut["start_ms"] > cut["planned_start_ms"]
    assert online.call(bt, "GET", "/api/schedules").json() == [e]  # the preview saved nothing
    # edits: a stale copy is refused, a fresh one republishes
    refused(
        online.call(bt, "PUT", f"/api/schedules/{e['id']}",
                    json={**entry(sha), "expected_version": 7}),
        409, "stale_entry",
    )  # fmt: skip
    changed = online.call(
        bt, "PUT", f"/api/schedules/{e['id']}",
        json={**entry(sha, label="Bản tin trưa", dtstart="2030-01-06T11:00:00"),
              "expected_version": 1},
    )  # fmt: skip
    assert changed.status_code == 200 and changed.json()["version"] == 2
    refused(online.call(bt, "DELETE", f"/api/clips/{sha}"), 409, "clip_in_use")

    # play now and an emergency: one command per target, rows for each reached speaker
    played = online.call(bt, "POST", "/api/broadcasts", json={"targets": group("thon-1"),
                         "clip_sha256": sha, "label": "Loa thôn 1"})  # fmt: skip
    assert played.status_code == 201 and played.json()["level"] == "normal"
    sent = online.call(bt, "POST", "/api/broadcasts/emergency",
                       json={"targets": group("all"), "clip_sha256": sha, "label": "Bão số 5",
                             "confirm": True})  # fmt: skip
    assert sent.status_code == 201, sent.text
    alarm = sent.json()
    assert alarm["priority"] == 9 and alarm["status"] == "sent"
    assert [a["device"] for a in alarm["acks"]] == ["loa-1", "loa-2", "loa-3"]
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/all/cmd")
    assert cmd.json()["id"] == alarm["id"] and cmd.json()["body"]["at"] == alarm["at_ms"]
    stopped = online.call(bt, "POST", "/api/broadcasts/stop", json={"targets": group("all")})
    assert stopped.status_code == 201 and stopped.json()["kind"] == "stop"
    recent = online.call("officer", "GET", "/api/broadcasts").json()
    assert [b["id"] for b in recent] == [stopped.json()["id"], alarm["id"], played.json()["id"]]

    # the province pushes bulletins with its token; the operator decides the normal ones
    news = {"external_id": "BT-1", "title": "Lịch tiêm chủng", "level": "normal",
            "targets": group("thon-1"), "clip_sha256": sha}  # fmt: skip
    pushed = online.call(bt, "POST", "/api/bulletins", json=news)
    assert pushed.status_code == 201 and pushed.json()["state"] == "pending"
    assert pushed.json()["source"] == "broadcaster-token"
    twice = online.call(bt, "POST", "/api/bulletins", json=news)
    assert twice.json()["id"] == pushed.json()["id"]
    other = online.call(bt, "POST", "/api/bulletins", json={**news, "external_id": "BT-2"})
    waiting = online.call(bt, "GET", "/api/bulletins", params={"state": "pending"}).json()
    assert {b["id"] for b in waiting} == {pushed.json()["id"], other.json()["id"]}
    accepted = online.call(
        bt, "POST", f"/api/bulletins/{pushed.json()['id']}/accept",
        json={"dtstart": "2030-01-07T17:00:00"},
    )  # fmt: skip
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    assert accepted.json()["schedule_id"] is not None
    declined = online.call(
        bt, "POST", f"/api/bulletins/{other.json()['id']}/decline", json={"note": "Trùng"}
    )
    assert declined.json()["state"] == "declined" and declined.json()["note"] == "Trùng"
    refused(
        online.call(bt, "POST", f"/api/bulletins/{other.json()['id']}/accept", json={}),
        409, "already_decided",
    )  # fmt: skip
    urgent = online.call(bt, "POST", "/api/bulletins",
                         json={**news, "external_id": "BT-3", "level": "emergency"})  # fmt: skip
    assert urgent.json()["state"] == "aired" and urgent.json()["broadcast_id"]
    deleted = online.call(bt, "DELETE", f"/api/schedules/{e['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == e["id"]

    # every change is in the audit log, with who did it
    actions = [(a.action, a.actor_name) for a in online.audit()]
    token = "broadcaster (token broadcaster-token)"
    assert actions == [
        (action, token)
        for action in (
            "clip.upload", "clip.upload", "clip.say", "schedule.create", "schedule.update",
            "broadcast.play", "broadcast.emergency", "broadcast.stop", "bulletin.receive",
            "bulletin.receive", "bulletin.receive", "bulletin.accept", "bulletin.decline",
            "bulletin.receive", "schedule.delete",
        )
    ]  # fmt: skip
