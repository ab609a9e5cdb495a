"""Approval before air over HTTP, on SQLite and PostgreSQL, with the app's station on a real
Mosquitto: the role x action matrix, bad input refused in words, the audit log's two
steps, and the Probe seeing no schedule document until a leader approves.

The app and its calls are tests/broadcast_api_helpers.py's; a leader (lãnh đạo) is
added here, with a session-less API token as the other roles have.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from tests import test_controller_broadcast_api as api_tests
from tests.audio_helpers import tone_file
from tests.auth_helpers import session_csrf
from tests.broadcast_api_helpers import PASSWORD, Ctl, entry, group, refused

online = api_tests.online  # the fixture, shared
CLIP = "c" * 64


def add_user(ctl: Ctl, username: str, role: str) -> None:
    state = ctl.app.state.xaso
    with state.sessions() as db:
        user = create_user(
            db,
            state.auth.passwords,
            username=username,
            display_name="Lãnh đạo xã",
            role=role,
            password=PASSWORD,
            now_ms=state.now_ms(),
        )
        owner = Principal("user", user.id, username, username, Role(role), PERMISSIONS[Role(role)])
        ctl.tokens[username], _ = create_token(db, owner, f"{username}-token", role, state.now_ms())
        db.commit()


def signed_in(ctl: Ctl, username: str) -> TestClient:
    """A browser session (cookie and CSRF token) of ``username``."""
    client = TestClient(ctl.app)
    csrf = client.get("/login").text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": csrf},
        follow_redirects=False,
    )
    assert signed.status_code == 303
    return client


def setup(ctl: Ctl) -> str:
    """Approval on, a leader, and a clip: what every test here starts from."""
    add_user(ctl, "leader", "leader")
    with ctl.app.state.xaso.sessions() as db:
        assert ctl.station.gate.required(db) is False  # off by default
    on = ctl.call("admin", "PUT", "/api/settings/approval", json={"approval_required": True})
    assert on.status_code == 200 and on.json() == {"approval_required": True}
    wav = tone_file(ctl.tmp / "tone.wav", 440, 0.5)
    sha: str = ctl.upload("broadcaster", wav, "Bản tin sáng").json()["sha256"]
    return sha


def test_a_broadcasters_entry_reaches_no_device_until_a_leader_approves_and_both_are_audited(
    online: Ctl, fleet: Any, probe: Any
) -> None:
    sha = setup(online)
    made = online.call("broadcaster", "POST", "/api/schedules", json=entry(sha))
    assert made.status_code == 201 and made.json()["approval"] == "pending"
    # the admin's entry for thon-2 airs at once; after it, nothing was sent for thon-1
    other = online.call(
        "admin", "POST", "/api/schedules", json=entry(sha, target={"kind": "group", "id": "thon-2"})
    )
    assert other.json()["approval"] == "approved"
    probe.wait_for(lambda m: m.topic == "xaso/grp/thon-2/schedule")
    assert probe.on("xaso/grp/thon-1/schedule") == []
    fresh = fleet.probe()  # the broker keeps no retained document for thon-1 either
    fresh.wait_for(lambda m: m.topic == "xaso/grp/thon-2/schedule" and m.retain)
    assert fresh.on("xaso/grp/thon-1/schedule") == []
    (waiting,) = online.call("officer", "GET", "/api/approvals").json()
    assert waiting["kind"] == "schedule" and waiting["schedule_id"] == made.json()["id"]
    assert waiting["prepared_by"].startswith("broadcaster")

    approved = online.call("leader", "POST", f"/api/approvals/{waiting['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"
    doc = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/schedule")
    assert [i["id"] for i in doc.json()["body"]["items"]] == [made.json()["item_id"]]
    assert online.call("leader", "GET", "/api/approvals").json() == []
    steps = [(e.action, e.actor_name) for e in online.audit() if e.action.startswith("approval.")]
    assert steps == [
        ("approval.setting", "admin (token admin-token)"),
        ("approval.prepare", "broadcaster (token broadcaster-token)"),
        ("approval.approve", "leader (token leader-token)"),
    ]
    client = signed_in(online, "admin")
    page = client.get("/audit", headers={"accept": "text/html"}).text
    assert "Chuẩn bị, chờ lãnh đạo duyệt" in page and "Lãnh đạo duyệt cho phát" in page
    assert ">approval." not in page  # words, not codes, in the rows (the code is a tooltip)


def test_who_may_approve_reject_and_review(online: Ctl) -> None:
    sha = setup(online)
    ids = [
        online.call(
            "broadcaster",
            "POST",
            "/api/schedules",
            json=entry(sha, label=f"Mục {n}", dtstart=f"2030-01-0{n}T06:30:00"),
        ).json()["id"]
        for n in (6, 7)
    ]
    assert all(
        online.call("officer", "GET", f"/api/schedules/{i}").json()["approval"] == "pending"
        for i in ids
    )
    first, second = (w["id"] for w in online.call("leader", "GET", "/api/approvals").json())
    for role in ("broadcaster", "technician", "officer"):
        for action, body in (
            ("approve", None),
            ("reject", {"reason": "Không"}),
            ("reviewed", None),
        ):
            answer = online.call(role, "POST", f"/api/approvals/{first}/{action}", json=body)
            refused(answer, 403, "error.forbidden")
        refused(
            online.call(role, "PUT", "/api/settings/approval", json={"approval_required": False}),
            403,
            "error.forbidden",
        )
    refused(
        online.call("leader", "PUT", "/api/settings/approval", json={"approval_required": False}),
        403,
        "error.forbidden",
    )
    assert online.call("leader", "POST", f"/api/approvals/{first}/approve").status_code == 200
    rejected = online.call(
        "admin", "POST", f"/api/approvals/{second}/reject", json={"reason": "Nội dung chưa đúng"}
    )
    assert rejected.status_code == 200 and rejected.json()["reason"] == "Nội dung chưa đúng"
    assert [
        online.call("officer", "GET", f"/api/schedules/{i}").json()["approval"] for i in ids
    ] == ["approved", "rejected"]
    # a broadcaster made a leader still cannot approve what they prepared
    third = online.call(
        "broadcaster",
        "POST",
        "/api/schedules",
        json=entry(sha, label="Mục 8", dtstart="2030-01-08T06:30:00"),
    )
    assert third.json()["approval"] == "pending"
    promoted = online.call("admin", "PATCH", "/api/users/broadcaster", json={"role": "leader"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "leader"
    (own,) = online.call("leader", "GET", "/api/approvals").json()
    promoted_browser = signed_in(online, "broadcaster")  # a token keeps its own role
    promoted_browser.headers["X-CSRF-Token"] = session_csrf(promoted_browser)
    body = refused(promoted_browser.post(f"/api/approvals/{own['id']}/approve"), 409, "own_work")
    assert "chính mình" in body["vi"]


def test_bad_input_is_refused_in_vietnamese_and_changes_nothing(online: Ctl) -> None:
    sha = setup(online)
    online.call("broadcaster", "POST", "/api/schedules", json=entry(sha))
    (item,) = online.call("leader", "GET", "/api/approvals").json()
    path = f"/api/approvals/{item['id']}"
    body = refused(
        online.call("leader", "POST", "/api/approvals/999/approve"), 404, "approval_not_found"
    )
    assert "999" in body["vi"] and "tải lại" in body["vi"]
    for bad in ({"reason": ""}, {"reason": "   "}):
        body = refused(online.call("leader", "POST", f"{path}/reject", json=bad), 422, "no_reason")
        assert "lý do" in body["vi"]
    for bad in ({}, {"reason": "x" * 501}, {"reason": "ok", "more": 1}, {"reason": 5}):
        refused(online.call("leader", "POST", f"{path}/reject", json=bad), 422)
    for bad_id in ("0", "abc", str(2**31)):
        refused(online.call("leader", "POST", f"/api/approvals/{bad_id}/approve"), 422)
    refused(online.call("leader", "POST", f"{path}/reviewed"), 409, "already_decided")
    flag = "approval_required"
    bad_settings = ({}, {flag: "có"}, {flag: 0}, {flag: "true"}, {flag: True, "x": 1})
    for bad in bad_settings:
        refused(online.call("admin", "PUT", "/api/settings/approval", json=bad), 422)
    assert online.call("leader", "GET", "/api/approvals").json() == [item]  # nothing changed
    assert online.call("leader", "POST", f"{path}/approve").status_code == 200
    body = refused(online.call("leader", "POST", f"{path}/approve"), 409, "already_decided")
    assert "không còn chờ duyệt" in body["vi"]
    refused(online.call("leader", "POST", f"{path}/reject", json={"reason": "Muộn"}), 409)


def test_a_held_play_waits_and_an_emergency_airs_at_once_for_review(
    online: Ctl, probe: Any
) -> None:
    sha = setup(online)
    held = online.call(
        "broadcaster",
        "POST",
        "/api/broadcasts",
        json={"targets": group("thon-1"), "clip_sha256": sha, "label": "Họp"},
    )
    assert held.status_code == 202 and held.json()["state"] == "pending"
    assert online.call("officer", "GET", "/api/broadcasts").json() == []  # nothing sent
    sent = online.call(
        "broadcaster",
        "POST",
        "/api/broadcasts/emergency",
        json={"targets": group("all"), "clip_sha256": sha, "confirm": True},
    )
    assert sent.status_code == 201
    probe.wait_for(lambda m: m.topic == "xaso/grp/all/cmd")
    assert probe.on("xaso/grp/thon-1/cmd") == []
    waiting = {w["kind"]: w for w in online.call("leader", "GET", "/api/approvals").json()}
    assert waiting["emergency"]["state"] == "review"
    assert waiting["emergency"]["broadcast_id"] == sent.json()["id"]
    assert waiting["play"]["id"] == held.json()["approval_id"]
    approved = online.call("leader", "POST", f"/api/approvals/{waiting['play']['id']}/approve")
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/cmd")
    assert cmd.json()["id"] == approved.json()["broadcast_id"]
    reviewed = online.call(
        "leader", "POST", f"/api/approvals/{waiting['emergency']['id']}/reviewed"
    )
    assert reviewed.json()["state"] == "reviewed"
    assert online.call("leader", "GET", "/api/approvals").json() == []
    # off again: a broadcaster's play goes out at once, as before
    online.call("admin", "PUT", "/api/settings/approval", json={"approval_required": False})
    now = online.call(
        "broadcaster",
        "POST",
        "/api/broadcasts",
        json={"targets": group("thon-2"), "clip_sha256": sha},
    )
    assert now.status_code == 201 and now.json()["kind"] == "play"


def test_the_approvals_page_is_vietnamese_and_its_forms_refuse_bad_input(online: Ctl) -> None:
    sha = setup(online)
    online.call("broadcaster", "POST", "/api/schedules", json=entry(sha))
    leader = signed_in(online, "leader")
    html = {"accept": "text/html"}
    page = leader.get("/approvals", headers=html)
    assert page.status_code == 200 and "Chờ duyệt" in page.text and "Bản tin sáng" in page.text
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    (item,) = online.call("leader", "GET", "/api/approvals").json()
    no_reason = leader.post(
        f"/approvals/{item['id']}/reject", data={"csrf_token": csrf, "reason": ""}, headers=html
    )
    assert no_reason.status_code == 422 and "Hãy ghi lý do từ chối" in no_reason.text
    admin = signed_in(online, "admin")
    admin_page = admin.get("/approvals", headers=html).text
    admin_csrf = admin_page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    bad = admin.post(
        "/approvals/setting",
        data={"csrf_token": admin_csrf, "approval_required": "maybe"},
        headers=html,
    )
    assert bad.status_code == 422 and "Chọn bật hoặc tắt" in bad.text
    assert "approval_required" not in bad.text.split("<main", 1)[-1].split("<form", 1)[0]
    users = admin.get("/users", headers=html).text
    assert '<option value="leader">Lãnh đạo</option>' in users


def test_a_broadcasters_relay_waits_for_a_leader_then_starts_with_its_fallback(
    online: Ctl, probe: Any
) -> None:
    sha = setup(online)
    vov = {"name": "VOV1", "url": "https://str.vov.gov.vn/vov1", "level": "priority",
           "on_failure": "fallback", "fallback_sha256": sha}  # fmt: skip
    made = online.call("broadcaster", "POST", "/api/stations", json=vov)
    assert made.status_code == 201, made.text
    relay = f"/api/stations/{made.json()['id']}/relay"
    held = online.call("broadcaster", "POST", relay,
                       json={"targets": group("thon-1"), "minutes": 30})  # fmt: skip
    assert held.status_code == 202, held.text
    assert held.json()["label"] == "VOV1"
    assert online.call("officer", "GET", "/api/broadcasts").json() == []  # nothing sent
    (waiting,) = online.call("leader", "GET", "/api/approvals").json()
    assert waiting["kind"] == "play" and waiting["id"] == held.json()["approval_id"]
    assert probe.on("xaso/grp/thon-1/cmd") == []
    refused(online.call("broadcaster", "POST", f"/api/approvals/{waiting['id']}/approve"),
            403, "error.forbidden")  # fmt: skip

    approved = online.call("leader", "POST", f"/api/approvals/{waiting['id']}/approve")
    assert approved.status_code == 200, approved.text
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/cmd").json()
    assert cmd["id"] == approved.json()["broadcast_id"] and cmd["type"] == "broadcast.stream"
    body = cmd["body"]
    assert body["url"] == vov["url"] and body["duration_s"] == 1800 and body["priority"] == 5
    assert body["fallback"]["sha256"] == sha
    sent = online.call("officer", "GET", "/api/broadcasts").json()
    assert [b["kind"] for b in sent] == ["stream"]
    assert sent[0]["created_by"].startswith("broadcaster")  # in its author's name
    # an admin, who may approve, relays at once
    direct = online.call("admin", "POST", relay, json={"targets": group("thon-2"), "minutes": 5})
    assert direct.status_code == 201 and direct.json()["kind"] == "stream"
