"""Reports on a province's controller (both databases): each commune's users read the
proof of play, the play log and the queue statistics of their own commune's devices only,
whatever they ask for; the province reads every commune, one commune, or totals by
commune, and its sheets and files carry a "Xã" column with each commune's name."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from fastapi.testclient import TestClient

from cli.brokers.mosquitto import free_port
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.fleet.ingest_writes import Item, write_batch
from controller.site.devices import add_device
from controller.site.directory import Site
from protocol.uplink import Event
from tests.broadcast_api_helpers import PASSWORD, make_app, refused
from tests.commune_helpers import COMMUNES, OTHER, OWN, Two, add_communes

T0 = 1_764_718_200_000  # 03/12/2025 06:30 in Vietnam
DAY = 86_400_000
PERIOD = {"start_ms": T0 - 3_600_000, "end_ms": T0 + DAY}
PAGE = "start=03/12/2025&end=03/12/2025"
KIOSK = {"phu-an": "kiosk-an", "tan-binh": "kiosk-binh"}
SERVICE = {"phu-an": "A", "tan-binh": "B"}
ROLES = ("admin", "technician", "leader", "broadcaster")


@pytest.fixture
def two(tmp_path: Path, database_url: str, site: Site) -> Iterator[Two]:
    add_communes(site)
    for commune, kiosk in KIOSK.items():
        add_device(site.dir, kiosk, ["kiosk"], broker_host="127.0.0.1", broker_port=1883,
                   office_address="192.168.1.21", commune=commune)  # fmt: skip
    add_device(site.dir, "loa-tinh", ["speaker"], ["all"], broker_host="127.0.0.1",
               broker_port=1883)  # the province's own cluster  # fmt: skip
    app = make_app(tmp_path, database_url, site, free_port())
    two = Two(app, roles=ROLES)
    plays = [(device, f"Tin {device}") for device in (*OWN.values(), "loa-tinh")]
    tickets = [(KIOSK[c], SERVICE[c]) for c in COMMUNES]
    items = [
        Item(device, "event", Event(id=f"p{n}", type="play.finished", ts=T0 + 60_000,
             body={"key": f"k{n}", "origin": "schedule", "priority": 2, "planned_ms": T0,
                   "label": label, "item_id": "sang", "actual_ms": T0, "outcome": "completed",
                   "played_ms": 60_000}), T0)
        for n, (device, label) in enumerate(plays)
    ] + [
        Item(kiosk, "event", Event(id=f"t{n}", type="ticket.issued", ts=T0,
             body={"ticket_id": f"{service}001", "number": f"{service}001", "service": service,
                   "queue": service, "day": "2025-12-03", "priority": False, "issued_ms": T0,
                   "people_ahead": 0, "wait_s": None}), T0)
        for n, (kiosk, service) in enumerate(tickets)
    ]  # fmt: skip
    state = app.state.xaso
    with state.sessions.begin() as db:
        write_batch(db, items, T0)
    yield two
    state.engine.dispose()


def test_a_commune_reads_only_its_own_devices_reports(two: Two) -> None:
    for commune in COMMUNES:  # the role × commune matrix, on one app
        for role in ROLES:
            _reads_its_own(two, commune, role)


def _reads_its_own(two: Two, commune: str, role: str) -> None:
    me = (commune, role)
    log = two.call(me, "GET", "/api/reports/log", params=PERIOD).json()
    assert [(r["device_id"], r["commune"]) for r in log] == [(OWN[commune], commune)]
    for by, key in (("device", OWN[commune]), ("commune", commune)):
        plays = two.call(me, "GET", "/api/reports/plays", params=PERIOD | {"by": by}).json()
        assert [(r["key"], r["plays"]) for r in plays] == [(key, 1)]
    queue = two.call(me, "GET", "/api/reports/queue", params=PERIOD).json()
    assert [(r["key"], r["issued"]) for r in queue] == [(SERVICE[commune], 1)]
    # their own commune named is the same; another's, or a device of another's, is not theirs
    own = two.call(me, "GET", "/api/reports/log", params=PERIOD | {"commune": commune})
    assert own.json() == log
    for path in ("/api/reports/log", "/api/reports/plays", "/api/reports/queue"):
        other = two.call(me, "GET", path, params=PERIOD | {"commune": OTHER[commune]})
        refused(other, 403, "reports.other_commune")
        refused(two.call(me, "GET", path.replace("/api", ""), params={"commune": OTHER[commune]}),
                403, "reports.other_commune")  # fmt: skip
    theirs = OWN[OTHER[commune]]
    assert two.call(me, "GET", "/api/reports/log", params=PERIOD | {"device": theirs}).json() == []
    for page in ("/reports/log", "/reports/plays?by=group", "/reports/queue"):
        html = two.call(me, "GET", f"{page}{'&' if '?' in page else '?'}{PAGE}").text
        assert theirs not in html and KIOSK[OTHER[commune]] not in html, page
        assert COMMUNES[OTHER[commune]] not in html and "loa-tinh" not in html, page
        assert 'name="commune"' not in html, page  # nothing to choose from


def test_the_province_reads_every_commune_one_commune_or_totals_by_commune(two: Two) -> None:
    province = (None, "admin")
    log = two.call(province, "GET", "/api/reports/log", params=PERIOD).json()
    assert sorted((r["device_id"], r["commune"]) for r in log) == [
        ("loa-an-1", "phu-an"), ("loa-binh-1", "tan-binh"), ("loa-tinh", None)
    ]  # fmt: skip
    one = two.call(province, "GET", "/api/reports/log", params=PERIOD | {"commune": "tan-binh"})
    assert [r["device_id"] for r in one.json()] == ["loa-binh-1"]
    totals = two.call(province, "GET", "/api/reports/plays", params=PERIOD | {"by": "commune"})
    assert [(r["key"], r["plays"], r["total_played_ms"]) for r in totals.json()] == [
        ("", 1, 60_000), ("phu-an", 1, 60_000), ("tan-binh", 1, 60_000)
    ]  # fmt: skip
    queue = two.call(province, "GET", "/api/reports/queue", params=PERIOD | {"commune": "phu-an"})
    assert [r["key"] for r in queue.json()] == ["A"]
    for bad in ("xa-khong-co", "phu-an'--", "x" * 64, "Xã Phú An"):
        asked = two.call(province, "GET", "/api/reports/log", params=PERIOD | {"commune": bad})
        refused(asked, 422, "error.bad_commune")
    too_long = two.call(province, "GET", "/reports/log", params={"commune": "x" * 65})
    assert too_long.status_code == 422 and "Traceback" not in too_long.text


def test_the_provinces_sheets_and_files_name_each_commune(two: Two) -> None:
    province = (None, "admin")
    html = two.call(province, "GET", f"/reports/log?{PAGE}").text
    for name in (*COMMUNES.values(), "Cấp tỉnh"):
        assert f"<td>{name}</td>" in html
    assert "<th>Xã</th>" in html and 'name="commune"' in html
    book = openpyxl.load_workbook(io.BytesIO(
        two.call(province, "GET", f"/reports/log?{PAGE}&format=xlsx").content))  # fmt: skip
    rows = list(book.active.iter_rows(values_only=True))
    header = list(rows[0])
    at = header.index("Xã")
    assert header[at - 1] == "Cụm loa"
    assert sorted((r[at - 1], r[at]) for r in rows[1:]) == [
        ("loa-an-1", "Xã Phú An"), ("loa-binh-1", "Xã Tân Bình"), ("loa-tinh", "Cấp tỉnh")
    ]  # fmt: skip
    one = two.call(province, "GET", f"/reports/log?{PAGE}&commune=phu-an&format=csv&sep=semicolon")
    lines = list(csv.reader(io.StringIO(one.content.decode("utf-8-sig")), delimiter=";"))
    assert [line[lines[0].index("Xã")] for line in lines[1:]] == ["Xã Phú An"]
    by_commune = two.call(province, "GET", f"/reports/plays?{PAGE}&by=commune&format=csv")
    lines = list(csv.reader(io.StringIO(by_commune.content.decode("utf-8-sig"))))
    assert lines[0][:2] == ["Xã", "Số lượt phát"]
    assert [line[:2] for line in lines[1:]] == [["Cấp tỉnh", "1"], ["Xã Phú An", "1"],
                                                ["Xã Tân Bình", "1"]]  # fmt: skip
    by_group = two.call(province, "GET", f"/reports/plays?{PAGE}&by=group&format=csv")
    lines = list(csv.reader(io.StringIO(by_group.content.decode("utf-8-sig"))))
    assert lines[0][:3] == ["Nhóm", "Xã", "Số lượt phát"]
    assert sorted(tuple(line[:3]) for line in lines[1:]) == [
        ("Toàn tỉnh", "Cấp tỉnh", "3"), ("Xã Phú An", "Xã Phú An", "1"),
        ("Xã Tân Bình", "Xã Tân Bình", "1"), ("an-thon-1", "Xã Phú An", "1"),
        ("binh-thon-1", "Xã Tân Bình", "1"),
    ]  # fmt: skip
    english = two.call(province, "GET", f"/reports/plays?{PAGE}&by=commune&format=csv&lang=en")
    assert english.content.decode("utf-8-sig").splitlines()[0].startswith("Commune,Plays")


def test_a_site_of_one_commune_has_no_commune_column(
    tmp_path: Path, database_url: str, site: Site
) -> None:
    add_device(site.dir, "loa-1", ["speaker"], ["thon-1"], broker_host="127.0.0.1",
               broker_port=1883)  # fmt: skip
    app = make_app(tmp_path, database_url, site, free_port())
    state = app.state.xaso
    with state.sessions() as db:
        user = create_user(db, state.auth.passwords, username="quan", display_name="Quân",
                           role="admin", password=PASSWORD, now_ms=state.now_ms())  # fmt: skip
        owner = Principal("user", user.id, "quan", "Quân", Role.ADMIN, PERMISSIONS[Role.ADMIN])
        token, _ = create_token(db, owner, "quan", "admin", 1)
        db.commit()
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    html = client.get(f"/reports/plays?{PAGE}&by=commune").text
    assert "<th>Xã</th>" not in html and 'name="commune"' not in html
    assert 'value="commune"' not in html  # by commune is not offered
    assert '<option value="device" selected>' in html  # by device instead
    refused(client.get("/api/reports/log", params=PERIOD | {"commune": "a"}), 422,
            "error.bad_commune")  # fmt: skip
    state.engine.dispose()
