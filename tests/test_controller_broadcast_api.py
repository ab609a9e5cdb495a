"""The broadcasting area over HTTP: clips, schedules, broadcasts, bulletins, and no broker.

The real app (create_app) on SQLite and on PostgreSQL, through FastAPI's
TestClient; callers authenticate with API tokens of each role, as an
integration would. The test that sends runs the app's lifespan against a
real Mosquitto, so the station's bus connects as it does in production.
What the API refuses (roles, CSRF, bad input) is in
test_controller_broadcast_refusals.py; the app and its calls in
tests/broadcast_api_helpers.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.fleet.ingest_writes import Item, write_batch
from controller.site.directory import Site
from protocol.uplink import Event
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import Ctl, entry, group, make_app, refused
from tests.test_scheduling import TZ, local_ms


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
def online(tmp_path: Path, database_url: str, site: Site, broker: Any) -> Iterator[Ctl]:
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
    assert alarm["priority"] == 9 and alarm["status"] == "sent" and alarm["reached"] == 3
    assert "acks" not in alarm  # the answers are listed on GET, whatever the fleet's size
    listed = online.call(bt, "GET", f"/api/broadcasts/{alarm['id']}").json()
    assert [a["device"] for a in listed["acks"]] == ["loa-1", "loa-2", "loa-3"]
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


def test_the_calendar_says_what_will_play_and_what_did(online: Ctl) -> None:
    """The future is "sẽ phát" with why a row is marked; the past is what the speakers
    reported, and a speaker that reported nothing says so."""
    bt = "broadcaster"
    sha = online.upload(bt, tone_file(online.tmp / "t.wav", 440, 3.0), "Bản tin").json()["sha256"]
    now = datetime.now(TZ).replace(microsecond=0, tzinfo=None)
    yesterday = (now - timedelta(days=1)).replace(hour=6, minute=30, second=0)
    past = online.call(bt, "POST", "/api/schedules",
                       json=entry(sha, dtstart=yesterday.isoformat(), rrule="FREQ=DAILY;COUNT=3",
                                  label="Bản tin hôm qua"))  # fmt: skip
    assert past.status_code == 201, past.text
    key = f"{past.json()['item_id']}@{yesterday.isoformat()}"
    at = local_ms(yesterday.isoformat())
    played = {"key": key, "origin": "schedule", "priority": 2, "planned_ms": at,
              "label": "Bản tin hôm qua", "actual_ms": at + 30, "outcome": "completed",
              "played_ms": 1_000}  # fmt: skip
    told = Event(id="p1", type="play.finished", ts=at + 1030, body=played)
    with online.app.state.xaso.sessions.begin() as db:  # through ingest's writer
        write_batch(db, [Item("loa-1", "event", told, at + 2000)], at + 2000)
    page = online.call("officer", "GET", "/schedules", params={"day": yesterday.date().isoformat()})
    assert page.status_code == 200, page.text
    loa_1 = _plan(page.text, "loa-1")
    assert "Bản tin hôm qua" in loa_1 and "Phát trọn vẹn" in loa_1 and "Sẽ phát" not in loa_1
    assert "Chưa có báo cáo từ cụm loa" in _plan(page.text, "loa-3")  # thon-1, nothing told
    mine = online.call(bt, "GET", "/schedules").text
    assert "Toàn xã (mọi cụm loa)" in mine and "Nhóm all" not in mine

    # the future: "will play", and a clash says why
    online.call(bt, "POST", "/api/schedules", json=entry(sha, dtstart="2030-01-06T06:29:59"))
    form = {"target": "device:loa-1", "clip": sha, "from_day": "06/01/2030", "times": "06:30",
            "repeat": "once", "level": "priority", "label": "Tin khẩn thôn 1"}  # fmt: skip
    future = online.call("officer", "GET", "/schedules", params={"day": "2030-01-06"})
    assert "Sẽ phát trọn vẹn" in _plan(future.text, "loa-1")
    preview = online.call(bt, "POST", "/schedules/preview", data=form)
    assert preview.status_code == 200, preview.text
    assert "Vì: «Tin khẩn thôn 1» có mức ưu tiên cao hơn phát chồng lên." in preview.text
    assert "Sẽ bị ngắt giữa chừng, rồi phát tiếp phần còn lại lúc 06:30:" in preview.text


def _plan(page: str, device: str) -> str:
    """The calendar table of one speaker, from the page's HTML."""
    start = page.index(f'data-device="{device}"')
    return page[start : page.index("</table>", start)]
