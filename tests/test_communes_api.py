"""Two communes on one controller, over the API and the pages (both databases): a role ×
commune matrix in which neither commune sees or touches the other's devices, alerts,
broadcasts or users, while the province admin sees all; and bad input refused in both
languages, changing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cli.brokers.mosquitto import free_port
from controller import i18n
from controller.auth.accounts import update_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.db.auth_tables import User
from controller.db.broadcast_tables import BroadcastAckRow, BroadcastCommuneRow, BroadcastRow
from controller.site.directory import Site
from tests.broadcast_api_helpers import PASSWORD, make_app, refused
from tests.commune_helpers import (
    COMMUNES,
    DEVICES,
    OTHER,
    OWN,
    ROLES,
    Two,
    add_communes,
    broadcast_id,
)

CLIP = "0" * 64


@pytest.fixture
def two(tmp_path: Path, database_url: str, site: Site) -> Iterator[Two]:
    add_communes(site)
    app = make_app(tmp_path, database_url, site, free_port())  # no broker: nothing is sent
    yield Two(app)
    app.state.xaso.engine.dispose()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("commune", list(COMMUNES))
def test_a_commune_sees_only_its_own_devices_alerts_and_broadcasts(
    two: Two, commune: str, role: str
) -> None:
    me, mine, theirs = (commune, role), OWN[commune], OWN[OTHER[commune]]
    devices = two.call(me, "GET", "/api/devices").json()
    assert [d["id"] for d in devices["devices"]] == [mine] and devices["total"] == 1
    assert two.call(me, "GET", f"/api/devices/{mine}").status_code == 200
    refused(two.call(me, "GET", f"/api/devices/{theirs}"), 404)
    refused(two.call(me, "GET", f"/api/devices/{theirs}/health"), 404)
    alerts = two.call(me, "GET", "/api/alerts").json()
    assert [a["device_id"] for a in alerts] == [mine]
    theirs_alert = next(a for a in two.call((None, "admin"), "GET", "/api/alerts").json()
                        if a["device_id"] == theirs)  # fmt: skip
    refused(two.call(me, "POST", f"/api/alerts/{theirs_alert['id']}/acknowledge"), 404)
    listed = two.call(me, "GET", "/api/broadcasts").json()
    assert [b["id"] for b in listed] == [broadcast_id(commune)]
    refused(two.call(me, "GET", f"/api/broadcasts/{broadcast_id(OTHER[commune])}"), 404)
    targets = two.call(me, "GET", "/api/targets").json()
    assert [d["id"] for d in targets["devices"]] == [mine]
    for page in ("/", "/alerts", f"/devices/{mine}", "/broadcasts", "/console"):
        html = two.call(me, "GET", page)
        if html.status_code == 403:  # a page the role has not: nothing of anyone's
            continue
        assert html.status_code == 200, (page, html.text[:300])
        assert theirs not in html.text and OTHER[commune] + "-thon" not in html.text, page
    assert two.call(me, "GET", f"/devices/{theirs}").status_code == 404


def test_the_province_admin_sees_both_communes(two: Two) -> None:
    province = (None, "admin")
    devices = two.call(province, "GET", "/api/devices").json()["devices"]
    assert [d["id"] for d in devices] == sorted(DEVICES)
    assert {b["id"] for b in two.call(province, "GET", "/api/broadcasts").json()} == {
        broadcast_id(c) for c in COMMUNES
    }
    html = two.call(province, "GET", "/broadcasts").text
    assert "Toàn xã: Xã Phú An" in html
    assert "Toàn xã: Xã Tân Bình" in html and "Toàn tỉnh" in html


def test_a_province_broadcast_is_seen_by_each_commune_it_reached_with_its_own_speakers(
    two: Two,
) -> None:
    province = "c" * 32
    with two.app.state.xaso.sessions() as db:
        db.add(BroadcastRow(id=province, kind="play", targets=[{"kind": "group", "id": "all"}],
                            level="emergency", priority=9, label="Bão số 5", created_by="tinh",
                            created_ms=2, status="partial", devices=sorted(DEVICES),
                            answered=2, answered_ok=1, commune=None))  # fmt: skip
        db.flush()
        db.add_all(BroadcastCommuneRow(broadcast_id=province, commune=c) for c in COMMUNES)
        db.add(BroadcastAckRow(broadcast_id=province, device="loa-an-1", ok=True, acked_ms=3))
        db.add(BroadcastAckRow(broadcast_id=province, device="loa-binh-1", ok=False,
                               error="busy", acked_ms=3))  # fmt: skip
        db.commit()
    for commune, status in (("phu-an", "acked"), ("tan-binh", "refused")):
        me, mine, theirs = (commune, "broadcaster"), OWN[commune], OWN[OTHER[commune]]
        listed = two.call(me, "GET", "/api/broadcasts").json()
        assert [b["id"] for b in listed] == [province, broadcast_id(commune)]
        seen = two.call(me, "GET", f"/api/broadcasts/{province}").json()
        assert [a["device"] for a in seen["acks"]] == [mine]
        assert seen["targets"] == [{"kind": "group", "id": commune}]
        assert (seen["reached"], seen["answered"], seen["status"]) == (1, 1, status)
        html = two.call(me, "GET", "/broadcasts").text
        assert "Bão số 5" in html and theirs not in html and "Toàn tỉnh" not in html
    whole = two.call((None, "admin"), "GET", f"/api/broadcasts/{province}").json()
    assert whole["reached"] == 2 and whole["status"] == "partial"


@pytest.mark.parametrize("commune", list(COMMUNES))
def test_a_commune_broadcaster_cannot_reach_the_other_commune(two: Two, commune: str) -> None:
    me, other = (commune, "broadcaster"), OTHER[commune]
    for target in (
        {"kind": "group", "id": other},  # the other's whole commune
        {"kind": "group", "id": "all"},  # the province
        {"kind": "device", "id": OWN[other]},
        {"kind": "group", "id": f"{'binh' if other == 'tan-binh' else 'an'}-thon-1"},
    ):
        for path, extra in (
            ("/api/broadcasts", {}),
            ("/api/broadcasts/emergency", {"confirm": True}),
            ("/api/broadcasts/stop", None),
        ):
            body: dict[str, Any] = {"targets": [target]}
            if extra is not None:
                body |= {"clip_sha256": CLIP, **extra}
            answer = refused(two.call(me, "POST", path, json=body), 403, "outside_commune")
            assert "chỉ chọn nhóm hoặc cụm loa của" in answer["vi"], answer
    # its own commune passes the scope (and meets the missing broker: nothing was sent)
    own = {"targets": [{"kind": "group", "id": commune}]}
    assert two.call(me, "POST", "/api/broadcasts/stop", json=own).status_code == 503
    technician = (commune, "technician")
    tone = {"targets": [{"kind": "device", "id": OWN[other]}], "frequency_hz": 1000,
            "duration_s": 1}  # fmt: skip
    refused(two.call(technician, "POST", "/api/commands/test-tone", json=tone), 403)
    with two.app.state.xaso.sessions() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(BroadcastRow)) == 2  # ours


def test_users_carry_a_commune_and_a_commune_admin_manages_only_its_own(two: Two) -> None:
    an_admin, province = ("phu-an", "admin"), (None, "admin")
    listed = two.call(an_admin, "GET", "/api/users").json()
    assert {u["commune"] for u in listed} == {"phu-an"} and len(listed) == 3
    assert {u["commune_name"] for u in listed} == {"Xã Phú An"}
    made = two.call(an_admin, "POST", "/api/users", json={
        "username": "bt-moi", "role": "broadcaster", "password": PASSWORD})  # fmt: skip
    assert made.status_code == 201 and made.json()["commune"] == "phu-an"
    refused(two.call(an_admin, "POST", "/api/users", json={
        "username": "bt-khac", "role": "broadcaster", "password": PASSWORD,
        "commune": "tan-binh"}), 403, "error.other_commune")  # fmt: skip
    refused(two.call(an_admin, "POST", "/api/users", json={
        "username": "bt-tinh", "role": "broadcaster", "password": PASSWORD,
        "commune": ""}), 403, "error.other_commune")  # fmt: skip
    refused(two.call(an_admin, "PATCH", "/api/users/broadcaster-tan-binh",
                     json={"role": "officer"}), 404)  # fmt: skip
    refused(two.call(province, "POST", "/api/users", json={
        "username": "bt-la", "role": "broadcaster", "password": PASSWORD,
        "commune": "nope"}), 422, "error.bad_commune")  # fmt: skip
    moved = two.call(province, "PATCH", "/api/users/bt-moi", json={"commune": "tan-binh"})
    assert moved.json()["commune_name"] == "Xã Tân Bình"
    assert len(two.call(province, "GET", "/api/users").json()) == 8
    html = two.call(province, "GET", "/users").text
    assert "Xã Tân Bình" in html and "Cấp tỉnh (mọi xã)" in html
    with two.app.state.xaso.sessions() as db:
        names = set(db.scalars(sa.select(User.username)))
    assert "bt-khac" not in names and "bt-tinh" not in names and "bt-la" not in names


def test_the_last_province_admin_stays_one_whatever_the_communes_admins(two: Two) -> None:
    province = (None, "admin")
    made = two.call(province, "POST", "/api/users", json={
        "username": "qt-tinh-2", "role": "admin", "password": PASSWORD})  # fmt: skip
    assert made.status_code == 201, made.text
    # two province admins: one may go into a commune
    moved = two.call(province, "PATCH", "/api/users/qt-tinh-2", json={"commune": "phu-an"})
    assert moved.status_code == 200 and moved.json()["commune"] == "phu-an"
    # then the first is the last: the communes' admins do not count, whatever the change
    with two.app.state.xaso.sessions() as db:
        lone = db.scalars(sa.select(User).where(User.username == "admin-tinh")).one()
        actor = Principal("user", 0, "qt", "qt", Role.ADMIN, PERMISSIONS[Role.ADMIN])
        for change in ({"role": "officer"}, {"active": False}, {"commune": "tan-binh"}):
            with pytest.raises(i18n.Refusal) as refusal:
                update_user(db, two.app.state.xaso.auth.passwords, actor, lone, **change)
            assert refusal.value.key == "error.last_admin", change
        db.rollback()
    users = {u["username"]: u for u in two.call(province, "GET", "/api/users").json()}
    assert (users["admin-tinh"]["role"], users["admin-tinh"]["commune"]) == ("admin", None)


@pytest.mark.parametrize("commune", list(COMMUNES))
def test_a_commune_technician_provisions_only_within_its_commune(two: Two, commune: str) -> None:
    me, theirs = (commune, "technician"), OWN[OTHER[commune]]
    made = two.call(me, "POST", "/api/devices", json={"id": "loa-moi", "roles": ["speaker"],
                                                      "groups": []})  # fmt: skip
    assert made.status_code == 201, made.text
    assert f'"{commune}"' in made.json()["config_toml"]  # in its commune's group
    registry = Site(two.app.state.xaso.settings.site_dir)
    assert {d.id: d.commune for d in registry.devices()}["loa-moi"] == commune
    for body in ({"commune": OTHER[commune]}, {"commune": ""}):
        answer = two.call(me, "POST", "/api/devices", json={"id": "loa-khac", "roles": ["speaker"],
                                                            **body})  # fmt: skip
        if body["commune"]:
            refused(answer, 403, "devices.other_commune")
        else:  # empty: its own commune, as by default
            assert answer.status_code == 201 and f'"{commune}"' in answer.json()["config_toml"]
            assert two.call(me, "DELETE", "/api/devices/loa-khac").status_code == 200
    refused(two.call(me, "DELETE", f"/api/devices/{theirs}"), 404)
    refused(two.call(me, "PUT", f"/api/devices/{theirs}/groups", json={"groups": ["x"]}), 404)
    for path in ("/api/keys", "/keys"):
        refused(two.call(me, "GET", path), 403, "keys.province_only")
    refused(two.call(me, "POST", "/api/keys/stage"), 403, "keys.province_only")
    assert two.call((None, "admin"), "GET", "/api/keys").status_code == 200
    page = two.call(me, "GET", "/devices/new").text
    assert COMMUNES[commune] in page and COMMUNES[OTHER[commune]] not in page
    assert "Cụm loa truyền thanh" in page
    stranger = {"id": "loa-la", "roles": ["speaker"], "commune": "khong-co"}
    unknown = two.call((None, "admin"), "POST", "/api/devices", json=stranger)
    assert unknown.status_code == 409 and "khong-co" in refused(unknown, 409)["vi"]
    assert "loa-la" not in {d.id for d in registry.devices()}  # nothing written
    province_page = two.call((None, "admin"), "GET", "/devices/new").text
    assert all(name in province_page for name in COMMUNES.values())
    # the other commune's device is still there, unchanged
    assert {d.id: d.commune for d in registry.devices()}[theirs] == OTHER[commune]
