"""The fleet's HTTP side on SQLite and PostgreSQL: dashboard API, health, alerts, reports,
provisioning with a real broker reload, key rotation, bad input, and who may do what."""

from __future__ import annotations

import csv
import io
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.db.fleet_tables import Device, DeviceState, EventRecord, TelemetrySample
from controller.settings import load_settings
from controller.site.directory import open_site
from tests.conftest import Fleet

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
T0 = 1_795_399_200_000  # 2026-11-23 09:00 in Hà Nội
MIN = 60_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


@dataclass
class Api:
    client: TestClient
    clock: Clock
    state: Any
    tokens: dict[str, dict[str, str]]  # role: headers

    def get(self, path: str, role: str = "admin", **kw: Any) -> Any:
        return self.send("GET", path, role, **kw)

    def send(self, method: str, path: str, role: str = "admin", **kw: Any) -> Any:
        headers = {**self.tokens[role], **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
def api(fleet: Fleet, tmp_path: Path, database_url: str) -> Iterator[Api]:
    """The app (no lifespan: the test drives the fleet service by hand) on the fleet's site,
    with the broker reloaded by SIGHUP to its pid; one API token per role."""
    pid_file = tmp_path / "mosquitto.pid"
    assert fleet.broker.proc is not None
    pid_file.write_text(f"{fleet.broker.proc.pid}\n")
    config = tmp_path / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{fleet.site.dir}"\n[database]\nurl = "{database_url}"\n'
        f'[mqtt]\nport = {fleet.broker.port}\nreload_pid_file = "{pid_file}"\n',
        encoding="utf-8",
    )
    clock = Clock()
    app = create_app(load_settings(config), clock=clock)
    state = app.state.xaso
    tokens = {}
    with state.sessions() as db:
        for role in Role:
            user = create_user(
                db, state.auth.passwords, username=f"u-{role.value}", display_name=role.value,
                role=role.value, password="mat-khau-dai-du", now_ms=clock.ms,
            )  # fmt: skip
            owner = Principal("user", user.id, user.username, role.value, role, PERMISSIONS[role])
            token, _ = create_token(db, owner, "t", role.value, clock.ms)
            tokens[role.value] = {"Authorization": f"Bearer {token}"}
        db.commit()
    state.fleet.tick()  # mirror the registry
    yield Api(TestClient(app), clock, state, tokens)
    state.engine.dispose()


def seen(api: Api, device: str, state: str | None, **values: Any) -> None:
    """What ingest would have written: the device's latest status and readings."""
    with api.state.sessions.begin() as db:
        db.execute(update(Device).where(Device.id == device).values(last_seen_ms=api.clock.ms))
        db.execute(
            update(DeviceState)
            .where(DeviceState.device_id == device)
            .values(state=state, changed_ms=api.clock.ms, **values)
        )


def test_the_dashboard_api_lists_filters_and_pages(api: Api) -> None:
    seen(api, "loa-1", "online", cpu_temp_c=51.5, disk_free_mb=4000, clock_synced=True,
         telemetry={"amplifier": {"on": True}})  # fmt: skip
    seen(api, "loa-2", "offline")
    seen(api, "kiosk-1", "online", printer={"paper": "near_end", "cover": "closed"})
    page = api.get("/api/devices").json()
    assert page["total"] == 4 and [d["id"] for d in page["devices"]] == [
        "kiosk-1", "loa-1", "loa-2", "loa-3",
    ]  # fmt: skip
    loa1 = page["devices"][1]
    assert loa1 | {"state": "online", "groups": ["all", "thon-1"], "amplifier_on": True} == loa1
    assert loa1["cpu_temp_c"] == 51.5 and loa1["clock_synced"] is True
    assert page["devices"][0]["printer_paper"] == "near_end"

    def ids(**params: Any) -> list[str]:
        return [d["id"] for d in api.get("/api/devices", params=params).json()["devices"]]

    assert ids(group="thon-1") == ["loa-1", "loa-3"]
    assert ids(state="online") == ["kiosk-1", "loa-1"]
    assert ids(state="offline") == ["loa-2"] and ids(state="unknown") == ["loa-3"]
    assert ids(role="kiosk") == ["kiosk-1"] and ids(q="loa-") == ["loa-1", "loa-2", "loa-3"]
    assert ids(limit=2, offset=1) == ["loa-1", "loa-2"]
    api.clock.ms += 11 * MIN  # past the 10-minute limit with nothing heard: offline
    assert ids(state="online") == [] and ids(state="offline") == ["kiosk-1", "loa-1", "loa-2"]
    html = api.get("/", headers={"accept": "text/html"}).text
    assert 'id="device-loa-1"' in html and "Mất kết nối" in html


def test_health_charts_alerts_and_acknowledging(api: Api) -> None:
    with api.state.sessions.begin() as db:
        db.add_all(
            TelemetrySample(device_id="loa-1", ts_ms=T0 + i * MIN, received_ms=T0 + i * MIN,
                            cpu_temp_c=60 + i, load1=0.5, disk_free_mb=3000)
            for i in range(12)
        )  # fmt: skip
    api.clock.ms = T0 + 12 * MIN
    seen(api, "loa-1", "online", cpu_temp_c=80.0)
    api.state.fleet.tick()  # rolls up the closed 5-minute buckets, raises temp.high
    health = api.get("/api/devices/loa-1/health").json()
    temps = health["metrics"]["cpu_temp_c"]
    assert health["period_s"] == 300 and [p["max"] for p in temps] == [64, 69]
    page = api.get("/devices/loa-1", headers={"accept": "text/html"}).text
    assert page.count('<svg class="chart"') == 3 and "Nhiệt độ CPU (°C)" in page

    (alert,) = api.get("/api/alerts", params={"status": "open"}).json()
    assert alert["kind"] == "temp.high" and alert["message_en"] == "loa-1 temperature high: 80 °C"
    assert api.get("/api/devices/loa-1").json()["alerts"] == ["temp.high"]
    acked = api.send("POST", f"/api/alerts/{alert['id']}/acknowledge", role="officer").json()
    assert acked["acknowledged"]["by"] == "u-officer (token t)"
    assert "đã biết lúc" in api.get("/alerts", headers={"accept": "text/html"}).text
    entries = api.get("/api/audit", params={"action": "alert."}).json()
    assert entries[0]["target"] == f"alert:{alert['id']}"

    seen(api, "loa-1", "online", cpu_temp_c=50.0)
    api.clock.ms += 20_000
    api.state.fleet.tick()
    assert api.get("/api/alerts", params={"status": "open"}).json() == []
    assert api.get("/api/alerts", params={"status": "cleared"}).json()[0]["id"] == alert["id"]


def test_reports_as_json_pages_and_csv_for_excel(api: Api) -> None:
    with api.state.sessions.begin() as db:
        play = {"key": "k", "origin": "schedule", "priority": 2, "planned_ms": T0}
        ticket = {"ticket_id": "t1", "number": "A001", "service": "Hộ tịch", "queue": "Hộ tịch"}
        ticket |= {"day": "2025-11-22", "priority": False}
        bodies = [
            ("loa-1", "play.finished",
             {**play, "actual_ms": T0, "outcome": "completed", "played_ms": 90_000,
              "relayed_ms": 78_000,  # a relay, with a drop in it
              "gaps": [{"offset_ms": 3_000, "length_ms": 12_000, "reason": "dropped"}]}),
            ("loa-1", "play.missed", {**play, "reason": "offline"}),
            ("loa-2", "play.interrupted",
             {**play, "actual_ms": T0, "played_ms": 2_000, "checkpoint_ms": T0 + 2_000,
              "reason": "power_loss"}),
            ("kiosk-1", "ticket.issued",
             {**ticket, "issued_ms": T0, "people_ahead": 0, "wait_s": None}),
            ("kiosk-1", "ticket.called",
             {**ticket, "counter": 1, "recall": 0, "waited_ms": 60_000}),
        ]  # fmt: skip
        db.add_all(
            EventRecord(device_id=d, event_id=f"e{i}", type=t, ts_ms=T0 + i, received_ms=T0,
                        body=b)
            for i, (d, t, b) in enumerate(bodies)
        )  # fmt: skip
    plays = api.get("/api/reports/plays", params={"start_ms": T0, "end_ms": T0 + MIN}).json()
    assert (
        plays[0] | {"key": "loa-1", "plays": 1, "total_played_ms": 90_000, "missed": 1} == plays[0]
    )
    by_group = api.get("/reports/plays", params={"by": "group"}).text
    assert '<svg class="chart bars"' in by_group and "thon-1" in by_group
    queue = api.get("/api/reports/queue", params={"start_ms": T0, "end_ms": T0 + MIN}).json()
    assert queue[0] | {"key": "Hộ tịch", "issued": 1, "called": 1, "avg_wait_s": 60.0} == queue[0]

    answer = api.get("/reports/queue", params={"format": "csv", "start": "23/11/2026"})
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == (
        'attachment; filename="lay-so_service_23-11-2026_23-11-2026.csv"'
    )
    assert answer.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert rows[0]["Dịch vụ"] == "Hộ tịch" and rows[0]["Số phát ra"] == "1"
    assert rows[0]["Chờ trung bình (phút:giây)"] == "1:00"
    played = api.get("/reports/plays", params={"format": "csv", "start": "2026-11-23"})
    assert "loa-1,1,1,1:30,1,thiết bị mất kết nối: 1," in played.content.decode("utf-8-sig")
    page = api.get("/reports/plays", params={"start": "23/11/2026"}).text
    assert "mất điện: 1" in page and "0:02" in page  # proof of play: cut, and what aired
    assert "power_loss" not in page and "offline" not in page
    assert plays[0]["relay_gaps"] == 1 and plays[0]["relay_gap_ms"] == 12_000
    assert "Gián đoạn tiếp sóng" in page and "0:12" in page  # what a relay lost
    kinds = api.get(
        "/api/reports/queue", params={"start_ms": T0, "end_ms": T0 + MIN, "by": "booking"}
    ).json()
    assert [(k["key"], k["issued"], k["called"]) for k in kinds] == [("walk_in", 1, 1)]
    sheet = api.get("/reports/queue", params={"by": "booking", "start": "23/11/2026"}).text
    assert "Đến trực tiếp" in sheet and "walk_in" not in sheet.split("<main")[1]
    xlsx = api.get(
        "/reports/queue", params={"by": "booking", "start": "23/11/2026", "format": "xlsx"}
    )
    assert xlsx.status_code == 200 and xlsx.content.startswith(b"PK")


def test_provisioning_from_the_api_reloads_the_real_broker(api: Api, fleet: Fleet) -> None:
    added = api.send(
        "POST", "/api/devices", role="technician",
        json={"id": "loa-9", "roles": ["speaker"], "groups": ["thon-9"], "name": "Cụm loa chợ"},
    )  # fmt: skip
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["broker_reload"] == "signal"
    config = tomllib.loads(body["config_toml"])
    assert config["mqtt"]["username"] == "loa-9" and config["device"]["name"] == "Cụm loa chợ"
    # the broker took the new password: the device can connect and publish its status
    probe = fleet.probe(as_device="loa-9", subscribe="xaso/dev/loa-9/cmd")
    probe.publish("xaso/dev/loa-9/status", b'{"state":"online","ts":1}')
    page = api.get("/api/devices", params={"group": "thon-9"}).json()
    assert [d["id"] for d in page["devices"]] == ["loa-9"]

    offline = api.send("PUT", "/api/devices/loa-9/groups", json={"groups": ["thon-1"]})
    assert offline.status_code == 503  # no MQTT session: the agent could not learn its groups
    assert api.get("/api/devices/loa-9").json()["groups"] == ["thon-9"]  # nothing changed
    with api.state.station.running():  # the app's station: its bus to the real broker
        deadline = time.monotonic() + 20
        while not api.state.station.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        moved = api.send("PUT", "/api/devices/loa-9/groups", json={"groups": ["thon-1", "all"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["groups"] == ["thon-1", "all"]
    # the running agent learns its groups from a signed, retained config.set
    watcher = fleet.probe(subscribe="xaso/dev/loa-9/config")
    config_set = watcher.wait_for(lambda m: m.topic == "xaso/dev/loa-9/config").json()
    assert config_set["type"] == "config.set" and config_set["kid"] == fleet.site.active_kid()
    assert config_set["body"]["groups"] == ["thon-1", "all"]
    assert (
        "topic read xaso/grp/thon-1/cmd"
        in fleet.site.acl_path.read_text().split("user loa-9")[1].split("user ")[0]
    )
    assert api.get("/api/devices/loa-9").json()["groups"] == ["all", "thon-1"]
    assert api.send("DELETE", "/api/devices/loa-9").status_code == 200
    assert api.get("/api/devices/loa-9").json()["registered"] is False
    assert "loa-9" not in fleet.site.passwd_path.read_text()
    actions = [e["action"] for e in api.get("/api/audit", params={"action": "device."}).json()]
    assert actions == ["device.remove", "device.groups", "device.add"]


def test_key_rotation_stages_trusts_then_activates(api: Api, fleet: Fleet) -> None:
    before = api.get("/api/keys").json()
    staged = api.send("POST", "/api/keys/stage").json()["staged"]
    assert staged and staged != before["active"]
    trust = tomllib.loads(fleet.site.device_config_path("loa-1").read_text())["trust"]["keys"]
    assert set(trust) == {before["active"], staged}
    assert open_site(fleet.site.dir).active_kid() == before["active"]
    assert api.send("POST", "/api/keys/stage").json()["staged"] == staged  # idempotent
    wrong = api.send("POST", "/api/keys/activate", json={"kid": before["active"]})
    assert wrong.status_code == 409 and wrong.json()["code"] == "site.key_not_staged"
    assert "--force" not in wrong.text and str(fleet.site.dir) not in wrong.text
    done = api.send("POST", "/api/keys/activate", json={"kid": staged}).json()
    assert done["active"] == staged and done["staged"] is None
    assert set(done["trusted"]) == {before["active"], staged}


BAD = [
    ("GET", "/api/devices/nope-1", {}, 404, "fleet.no_device"),
    ("GET", "/api/devices/Bad_Id", {}, 422, "error.invalid"),
    ("GET", "/api/devices?limit=0", {}, 422, "error.invalid"),
    ("GET", "/api/devices?limit=501", {}, 422, "error.invalid"),
    ("GET", "/api/devices?offset=-1", {}, 422, "error.invalid"),
    ("GET", "/api/devices?state=asleep", {}, 422, "error.invalid"),
    ("GET", "/api/devices?group=" + "g" * 49, {}, 422, "error.invalid"),
    ("GET", "/api/devices?q=%25", {}, 422, "error.invalid"),
    ("GET", "/api/devices/loa-1/health?range=1y", {}, 422, "error.invalid"),
    ("GET", "/api/devices/nope-1/health", {}, 404, "fleet.no_device"),
    ("GET", "/api/alerts?status=gone", {}, 422, "error.invalid"),
    ("GET", "/api/alerts?kind=nope", {}, 422, "error.invalid"),
    ("POST", "/api/alerts/999/acknowledge", {}, 404, "alerts.no_alert"),
    ("POST", "/api/alerts/0/acknowledge", {}, 422, "error.invalid"),
    ("GET", "/api/reports/plays?start_ms=10&end_ms=5", {}, 422, "reports.bad_period"),
    ("GET", "/api/reports/queue?start_ms=0&end_ms=99999999999999", {}, 422, "reports.bad_period"),
    ("GET", "/api/reports/queue?start_ms=0&end_ms=1&by=desk", {}, 422, "error.invalid"),
    ("POST", "/api/devices", {"json": {"id": "x" * 49, "roles": ["speaker"]}}, 422,
     "error.invalid"),
    ("POST", "/api/devices", {"json": {"id": "loa-7", "roles": []}}, 422, "error.invalid"),
    ("POST", "/api/devices", {"json": {"id": "loa-7", "roles": ["speaker"], "name": "n" * 201}},
     422, "error.invalid"),
    ("POST", "/api/devices", {"json": {"id": "loa-1", "roles": ["speaker"]}}, 409,
     "site.device_exists"),
    ("PUT", "/api/devices/nope-1/groups", {"json": {"groups": []}}, 404, "fleet.no_device"),
    ("PUT", "/api/devices/loa-1/groups", {"json": {"groups": ["g"] * 33}}, 422, "error.invalid"),
    ("DELETE", "/api/devices/nope-1", {}, 404, "fleet.no_device"),
    ("POST", "/api/keys/activate", {"json": {"kid": "zz"}}, 422, "error.invalid"),
    ("POST", "/api/keys/check", {}, 409, "site.no_staged_key"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[f"{b[0]} {b[1]}" for b in BAD])
def test_bad_input_gets_a_clear_bilingual_refusal(api: Api, case: tuple[Any, ...]) -> None:
    method, path, kw, status, code = case
    answer = api.send(method, path, **kw)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code and body["vi"] and body["en"] and body["vi"] != body["en"]
    assert "--" not in answer.text and "/tmp/" not in answer.text  # no CLI option, no path


# route, what every role gets (admin, broadcaster, technician, officer, leader)
ROUTES: list[tuple[tuple[str, str, dict[str, Any]], tuple[int, ...]]] = [
    (("GET", "/api/devices", {}), (200, 200, 200, 200, 200)),
    (("GET", "/api/alerts", {}), (200, 200, 200, 200, 200)),
    (("GET", "/api/reports/plays?start_ms=0&end_ms=1", {}), (200, 200, 200, 200, 200)),
    (("GET", "/api/reports/queue?start_ms=0&end_ms=1", {}), (200, 200, 200, 200, 200)),
    (("GET", "/api/keys", {}), (200, 403, 200, 403, 403)),
    # allowed, then refused for want of an MQTT session (no station runs here)
    (("PUT", "/api/devices/loa-1/groups", {"json": {"groups": ["thon-1"]}}),
     (503, 403, 503, 403, 403)),
    (("POST", "/api/devices", {"json": {"id": "x-1", "roles": ["kiosk"]}}),
     (409, 403, 409, 403, 403)),
    (("DELETE", "/api/devices/nope-1", {}), (404, 403, 404, 403, 403)),
]  # fmt: skip


def test_who_may_do_what(api: Api) -> None:
    api.send("POST", "/api/devices", json={"id": "x-1", "roles": ["kiosk"]})
    for (method, path, kw), expected in ROUTES:
        got = tuple(api.send(method, path, role=r.value, **kw).status_code for r in Role)
        assert got == expected, (method, path, got)
    anonymous = api.client.get("/api/devices")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "error.not_signed_in"


def test_the_app_starts_with_no_broker(tmp_path: Path, database_url: str) -> None:
    """The lifespan runs both services with nothing listening; pages still answer."""
    config = tmp_path / "controller.toml"
    config.write_text(f'{CHEAP}[database]\nurl = "{database_url}"\n[mqtt]\nport = 9\n')
    app = create_app(load_settings(config))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/devices").status_code == 401
    app.state.xaso.engine.dispose()
