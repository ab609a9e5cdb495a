"""API tokens and the audit log: bearer calls without CSRF, revocation, every change recorded.

Against the real app on SQLite and PostgreSQL, as in test_controller_auth.py
(the app and its helpers in tests/auth_helpers.py).
"""

from __future__ import annotations

from controller.web.routes.audit import action_text, details_text
from tests.auth_helpers import Controller, bilingual, signed_in


def test_api_tokens_authenticate_are_exempt_from_csrf_and_can_be_revoked(
    controller: Controller,
) -> None:
    admin = signed_in(controller)
    made = admin.post("/api/tokens", json={"name": "Hệ thống thông tin nguồn tỉnh",
                                           "role": "broadcaster"})  # fmt: skip
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("xaso_") and made.json()["prefix"] == token[:11]
    listed = admin.get("/api/tokens").json()
    assert all("token" not in t for t in listed) and listed[0]["last_used_ms"] is None

    bearer = controller.client()
    bearer.headers["Authorization"] = f"Bearer {token}"
    me = bearer.get("/api/me").json()
    assert me["kind"] == "token" and "broadcast" in me["permissions"]
    assert "manage_users" not in me["permissions"]
    forbidden = bearer.get("/api/users")
    assert forbidden.status_code == 403
    bilingual(forbidden, "error.forbidden")
    assert admin.get("/api/tokens").json()[0]["last_used_ms"] is not None

    # An admin token changes state with no CSRF header: browsers never send Bearer.
    admin_token = admin.post("/api/tokens", json={"name": "ops", "role": "admin"}).json()
    ops = controller.client()
    ops.headers["Authorization"] = f"Bearer {admin_token['token']}"
    user = {"username": "hoa", "role": "officer", "password": "mot-mat-khau-dai"}
    assert ops.post("/api/users", json=user).status_code == 201

    revoked = admin.delete(f"/api/tokens/{made.json()['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_ms"] is not None
    after = bearer.get("/api/me")
    assert after.status_code == 401 and after.headers["www-authenticate"] == "Bearer"
    bilingual(after, "error.bad_token")
    for header in ("Bearer xaso_nope", "Basic YWRtaW46YWRtaW4=", "Bearer"):
        assert (
            controller.client().get("/api/me", headers={"Authorization": header}).status_code == 401
        )
    bilingual(admin.delete("/api/tokens/999999"), "error.no_token")


def test_every_change_is_in_the_audit_log(controller: Controller) -> None:
    admin = signed_in(controller)
    csrf = admin.headers["X-CSRF-Token"]
    lan = {"username": "lan", "display_name": "Nguyễn Thị Lan", "role": "broadcaster"}
    admin.post("/api/users", json={**lan, "password": "mot-mat-khau-dai"})
    admin.patch("/api/users/lan", json={"role": "officer", "password": "mat-khau-moi-123"})
    admin.post("/users/lan/active", data={"active": "false", "csrf_token": csrf})
    token = admin.post("/api/tokens", json={"name": "tinh", "role": "officer"}).json()
    admin.delete(f"/api/tokens/{token['id']}")
    entries = controller.audit()
    summary = [(e.action, e.target, e.actor_name) for e in entries]
    assert summary == [
        ("session.login", "user:admin", "admin"),
        ("user.create", "user:lan", "admin"),
        ("user.update", "user:lan", "admin"),
        ("user.update", "user:lan", "admin"),
        ("token.create", f"token:{token['id']}", "admin"),
        ("token.revoke", f"token:{token['id']}", "admin"),
    ]
    assert entries[2].details == {"role": ["broadcaster", "officer"], "password_changed": True}
    assert entries[3].details == {"active": False}
    assert all(e.ip == "testclient" for e in entries)
    api = admin.get("/api/audit", params={"action": "user.", "limit": 2}).json()
    assert [a["action"] for a in api] == ["user.update", "user.update"]
    older = admin.get("/api/audit", params={"before_id": api[-1]["id"]}).json()
    assert [a["action"] for a in older] == ["user.create", "session.login"]
    page = admin.get("/audit?action=token.", headers={"accept": "text/html"}).text
    assert "Thu hồi mã truy cập API" in page and "Thêm người dùng" not in page
    assert ">token.revoke<" not in page  # the code only as the cell's title
    users = admin.get("/audit?action=user.", headers={"accept": "text/html"}).text
    assert "role: [&#34;broadcaster&#34;, &#34;officer&#34;]; password_changed: true" in users


def test_audit_details_read_as_typed_not_as_json_escapes() -> None:
    assert details_text({"label": "Bản tin sáng", "n": 2}) == "label: Bản tin sáng; n: 2"
    assert details_text({"groups": ["thôn 1", "xóm Đông"]}) == 'groups: ["thôn 1", "xóm Đông"]'
    assert action_text("vi", "clip.say") == "Tạo bản tin đọc tự động"
    assert action_text("en", "future.verb") == "future.verb"  # a newer action: its code
