"""The relayed stations ("Đài tiếp sóng") over HTTP: the list, a relay now, a schedule
entry relaying one, and bad input on every field.

The real app on SQLite and PostgreSQL through FastAPI's TestClient, with API
tokens per role (tests/broadcast_api_helpers.py); sending runs against a real
Mosquitto, and a probe reads what reached the speakers' topics.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import Ctl, entry, group, refused
from tests.test_controller_broadcast_api import online

__all__ = ["online"]  # the fixture, imported for pytest

BT = "broadcaster"
VOV1 = {"name": "VOV1", "url": "https://str.vov.gov.vn/vov1", "level": "normal"}


def _clip(ctl: Ctl, title: str = "Nhạc chờ") -> str:
    made = ctl.upload(BT, tone_file(ctl.tmp / "cho.wav", 330, 1.0), title)
    assert made.status_code == 201, made.text
    sha: str = made.json()["sha256"]
    return sha


def test_the_station_list_is_kept_audited_and_refuses_what_cannot_work(offline: Ctl) -> None:
    with offline.client:
        sha = _clip(offline)
        made = offline.call(BT, "POST", "/api/stations", json=VOV1)
        assert made.status_code == 201, made.text
        vov = made.json()
        assert vov["on_failure"] == "stop" and vov["fallback_sha256"] is None
        province = {"name": "  Đài  PT-TH tỉnh ", "url": "http://10.0.0.5:8000/tinh",
                    "level": "priority", "on_failure": "fallback",
                    "fallback_sha256": sha}  # fmt: skip
        tinh = offline.call("admin", "POST", "/api/stations", json=province).json()
        assert tinh["name"] == "Đài PT-TH tỉnh" and tinh["fallback_sha256"] == sha
        listed = offline.call(BT, "GET", "/api/stations").json()
        assert [s["name"] for s in listed] == ["VOV1", "Đài PT-TH tỉnh"]
        changed = offline.call(BT, "PUT", f"/api/stations/{vov['id']}",
                               json={**VOV1, "url": "https://str.vov.gov.vn/vov1-hd"})  # fmt: skip
        assert changed.status_code == 200 and changed.json()["url"].endswith("vov1-hd")

        # the fallback clip cannot be deleted from under its station
        refused(offline.call(BT, "DELETE", f"/api/clips/{sha}"), 409, "clip_in_use")

        bad_urls = ["ftp://str.vov.gov.vn/vov1", "rtsp://cam/1", "file:///etc/passwd",
                    "javascript:alert(1)", "http://", "https:///vov1", "str.vov.gov.vn/vov1",
                    "http://str.vov.gov.vn/vov 1", "http://đài.vn/vov1"]  # fmt: skip
        for url in bad_urls:
            body = refused(offline.call(BT, "POST", "/api/stations", json={**VOV1, "url": url}),
                           422, "bad_stream_url")  # fmt: skip
            assert body["vi"].startswith("Địa chỉ luồng phát"), url
        long_url = "https://vov.vn/" + "a" * 2040
        refused(offline.call(BT, "POST", "/api/stations", json={**VOV1, "url": long_url}), 422)
        refused(offline.call(BT, "POST", "/api/stations", json={**VOV1, "name": "   "}),
                422, "bad_station_name")  # fmt: skip
        refused(offline.call(BT, "POST", "/api/stations",
                             json={**VOV1, "name": "B", "on_failure": "fallback"}),
                422, "no_fallback")  # fmt: skip
        refused(offline.call(BT, "POST", "/api/stations",
                             json={**VOV1, "name": "C", "on_failure": "fallback",
                                   "fallback_sha256": "0" * 64}),
                404, "clip_not_found")  # fmt: skip
        refused(offline.call(BT, "POST", "/api/stations", json=VOV1), 409, "station_name_taken")
        for wrong in ({"level": "emergency"}, {"on_failure": "retry"}, {"colour": "red"},
                      {"fallback_sha256": "xyz"}, {"url": 5}):  # fmt: skip
            answer = offline.call(BT, "POST", "/api/stations", json={**VOV1, "name": "D", **wrong})
            assert answer.status_code == 422, wrong
        refused(offline.call(BT, "PUT", "/api/stations/999", json=VOV1), 404, "station_not_found")
        refused(offline.call(BT, "DELETE", "/api/stations/999"), 404, "station_not_found")
        assert offline.call(BT, "DELETE", "/api/stations/0").status_code == 422
        for role in ("technician", "officer"):
            assert offline.call(role, "POST", "/api/stations", json=VOV1).status_code == 403
            assert offline.call(role, "GET", "/api/stations").status_code == 403

        gone = offline.call(BT, "DELETE", f"/api/stations/{tinh['id']}")
        assert gone.status_code == 200 and gone.json()["name"] == "Đài PT-TH tỉnh"
        assert [s["name"] for s in offline.call(BT, "GET", "/api/stations").json()] == ["VOV1"]
        actions = [a.action for a in offline.audit() if a.action.startswith("station.")]
        assert actions == ["station.create", "station.create", "station.update", "station.delete"]
        assert offline.call(BT, "DELETE", f"/api/clips/{sha}").status_code == 200


def test_relay_now_sends_the_stations_stream_and_fallback_at_its_level(
    online: Ctl, probe: Any
) -> None:
    sha = _clip(online)
    station = {**VOV1, "level": "priority", "on_failure": "fallback", "fallback_sha256": sha}
    vov = online.call(BT, "POST", "/api/stations", json=station).json()
    sent = online.call(BT, "POST", f"/api/stations/{vov['id']}/relay",
                       json={"targets": group("thon-1"), "minutes": 30})  # fmt: skip
    assert sent.status_code == 201, sent.text
    info = sent.json()
    assert info["kind"] == "stream" and info["level"] == "priority" and info["reached"] == 2
    assert info["label"] == "VOV1" and info["stream_url"] == VOV1["url"]
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/cmd").json()
    assert cmd["type"] == "broadcast.stream" and cmd["id"] == info["id"]
    body = cmd["body"]
    assert body["url"] == VOV1["url"] and body["duration_s"] == 1800 and body["priority"] == 5
    assert body["fallback"]["sha256"] == sha and body["at"] == info["at_ms"]
    (audited,) = [a for a in online.audit() if a.action == "broadcast.relay"]
    assert audited.details["broadcast"] == info["id"]

    relay = f"/api/stations/{vov['id']}/relay"
    for minutes in (0, -5, 1441, "30", 2.5, None):
        body_in = {"targets": group("thon-1"), "minutes": minutes}
        assert online.call(BT, "POST", relay, json=body_in).status_code == 422, minutes
    refused(online.call(BT, "POST", "/api/stations/999/relay",
                        json={"targets": group("thon-1"), "minutes": 5}),
            404, "station_not_found")  # fmt: skip
    refused(online.call(BT, "POST", relay, json={"targets": group("thon-9"), "minutes": 5}),
            422, "unknown_target")  # fmt: skip
    assert online.call(BT, "POST", relay, json={"targets": [], "minutes": 5}).status_code == 422
    as_technician = online.call(
        "technician", "POST", relay, json={"targets": group("thon-1"), "minutes": 5}
    )
    assert as_technician.status_code == 403


@pytest.mark.parametrize("fallback", [True, False])
def test_a_schedule_entry_relays_a_station_and_follows_its_changes(
    online: Ctl, fleet: Any, fallback: bool
) -> None:
    sha = _clip(online)
    station = {**VOV1, "on_failure": "fallback", "fallback_sha256": sha} if fallback else VOV1
    vov = online.call(BT, "POST", "/api/stations", json=station).json()
    news = {**entry(sha), "clip_sha256": None, "station_id": vov["id"],
            "stream_duration_s": 1800, "rrule": "FREQ=DAILY;BYHOUR=5,18;BYMINUTE=0",
            "dtstart": "2030-01-06T05:00:00", "label": "Thời sự VOV"}  # fmt: skip
    made = online.call(BT, "POST", "/api/schedules", json=news)
    assert made.status_code == 201, made.text
    e = made.json()
    assert e["station_id"] == vov["id"] and e["stream_url"] == VOV1["url"]

    def item() -> dict[str, Any]:
        doc = fleet.probe().wait_for(lambda m: m.topic == "xaso/grp/thon-1/schedule" and m.retain)
        (only,) = doc.json()["body"]["items"]
        return dict(only)

    first = item()
    assert first["stream"]["url"] == VOV1["url"] and first["stream"]["duration_s"] == 1800
    assert (first["stream"].get("fallback") or {}).get("sha256") == (sha if fallback else None)
    assert first.get("clip") is None
    calendar = online.call("officer", "GET", "/api/calendar",
                           params={"start": "2030-01-06", "days": 1}).json()  # fmt: skip
    rows = {p["device"]: p["rows"] for p in calendar}["loa-1"]
    assert [r["label"] for r in rows] == ["Thời sự VOV", "Thời sự VOV"]

    # the station's new address reaches the speakers' schedule
    moved = {**station, "url": "https://str.vov.gov.vn/vov1-moi"}
    assert online.call(BT, "PUT", f"/api/stations/{vov['id']}", json=moved).status_code == 200
    second = fleet.probe().wait_for(
        lambda m: (
            m.topic == "xaso/grp/thon-1/schedule"
            and m.retain
            and m.json()["body"]["items"][0]["stream"]["url"].endswith("vov1-moi")
        )
    )
    assert second.json()["body"]["version"] > 1
    refused(online.call(BT, "DELETE", f"/api/stations/{vov['id']}"), 409, "station_in_use")

    # bad input: two sources, no duration, an unknown station
    refused(online.call(BT, "POST", "/api/schedules", json={**news, "clip_sha256": sha}),
            422, "bad_source")  # fmt: skip
    refused(online.call(BT, "POST", "/api/schedules",
                        json={**news, "stream_duration_s": None}), 422, "bad_duration")  # fmt: skip
    refused(online.call(BT, "POST", "/api/schedules", json={**news, "station_id": 999}),
            404, "station_not_found")  # fmt: skip
    for wrong in (0, "1", -1):
        bad = {**news, "station_id": wrong}
        assert online.call(BT, "POST", "/api/schedules", json=bad).status_code == 422, wrong
    assert online.call(BT, "DELETE", f"/api/schedules/{e['id']}").status_code == 200
    assert online.call(BT, "DELETE", f"/api/stations/{vov['id']}").status_code == 200
