"""Users, roles, sessions with CSRF, API tokens, sign-in limits and the audit log.

The pure parts are checked directly; everything else runs against the real
app on a SQLite file and on a fresh PostgreSQL database (`database_url`),
through FastAPI's TestClient (the app's full ASGI stack, in process).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.passwords import Passwords
from controller.auth.roles import (
    PERMISSIONS,
    Permission,
    Principal,
    Role,
    allows,
    token_permissions,
)
from controller.auth.security import LoginPolicy, digest, login_csrf
from controller.db.auth_tables import AuditEntry, User
from controller.db.base import Base
from controller.db.engine import make_engine
from controller.deps import require
from controller.settings import load_settings

ADMIN_PASSWORD = "mat-khau-quan-tri"


class Clock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Controller:
    app: FastAPI
    clock: Clock
    url: str

    def client(self) -> TestClient:
        return TestClient(self.app)

    def add_user(self, username: str, role: str, password: str = "mot-mat-khau-dai") -> None:
        state = self.app.state.xaso
        with state.sessions() as db:
            create_user(
                db,
                state.auth.passwords,
                username=username,
                display_name=username.title(),
                role=role,
                password=password,
                now_ms=state.now_ms(),
            )
            db.commit()

    def audit(self) -> list[AuditEntry]:
        with self.app.state.xaso.sessions() as db:
            return list(db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def write_config(tmp_path: Path, database_url: str, time_cost: int = 1) -> Path:
    """A configuration with a cheap argon2 (tests sign in often) and a low address limit."""
    config = tmp_path / "controller.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n[site]\ndir = "site"\n'
        f"[security]\nargon2_time_cost = {time_cost}\nargon2_memory_kib = 1024\n"
        "argon2_parallelism = 1\nlogin_ip_max_failures = 8\n",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def controller(tmp_path: Path, database_url: str) -> Iterator[Controller]:
    clock = Clock()
    app = create_app(load_settings(write_config(tmp_path, database_url)), clock=clock)
    ctl = Controller(app, clock, database_url)
    ctl.add_user("admin", "admin", ADMIN_PASSWORD)
    yield ctl
    app.state.xaso.engine.dispose()


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str) -> Any:
    page = client.get("/login")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": form_csrf(page.text)},
        follow_redirects=False,
    )


def session_csrf(client: TestClient) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert match
    return match.group(1)


def signed_in(ctl: Controller, username: str = "admin", password: str = ADMIN_PASSWORD) -> Any:
    client = ctl.client()
    assert sign_in(client, username, password).status_code == 303
    client.headers["X-CSRF-Token"] = session_csrf(client)
    return client


def bilingual(response: Any, code: str) -> None:
    body = response.json()
    assert body["code"] == code, body
    assert body["vi"] and body["en"] and body["vi"] != body["en"]
    assert body["detail"] == f"{body['vi']} / {body['en']}"


# --- pure parts ---------------------------------------------------------------


def test_passwords_hash_verify_and_rehash_when_the_cost_changes() -> None:
    weak = Passwords(time_cost=1, memory_kib=1024, parallelism=1)
    hashed = weak.hash("mật khẩu tiếng Việt")
    assert hashed.startswith("$argon2id$")
    assert weak.verify(hashed, "mật khẩu tiếng Việt")
    assert not weak.verify(hashed, "mat khau tieng Viet")
    assert not weak.verify("not a hash", "anything")
    assert not weak.needs_rehash(hashed)
    stronger = Passwords(time_cost=2, memory_kib=2048, parallelism=1)
    assert stronger.needs_rehash(hashed)
    assert stronger.verify(hashed, "mật khẩu tiếng Việt")  # old hashes still verify


def test_roles_matrix() -> None:
    expected = {
        Role.ADMIN: set(Permission),
        Role.BROADCASTER: {"view_fleet", "broadcast", "manage_schedules", "manage_clips",
                           "view_reports"},
        Role.TECHNICIAN: {"view_fleet", "manage_devices", "view_reports"},
        Role.OFFICER: {"view_fleet", "view_reports"},
    }  # fmt: skip
    for role, permissions in expected.items():
        assert PERMISSIONS[role] == {Permission(p) for p in permissions}
    assert not allows(Role.TECHNICIAN, Permission.BROADCAST)
    assert not allows(Role.OFFICER, Permission.MANAGE_SCHEDULES)
    assert not allows(Role.BROADCASTER, Permission.MANAGE_USERS)
    # A token never does more than its owner may now.
    assert token_permissions(Role.ADMIN, Role.OFFICER) == PERMISSIONS[Role.OFFICER]
    assert token_permissions(Role.BROADCASTER, Role.ADMIN) == PERMISSIONS[Role.BROADCASTER]


def test_login_policy_locks_after_the_limit_within_a_window() -> None:
    policy = LoginPolicy(max_failures=3, window_ms=1000, lockout_ms=5000)
    assert policy.locked_until([], 3) is None
    assert policy.locked_until([100, 200], 3) is None
    assert policy.locked_until([100, 200, 300], 3) == 5300
    assert policy.locked_until([100, 200, 1500], 3) is None  # spread over more than a window
    assert policy.since(10_000) == 4_000


def test_login_csrf_is_bound_to_the_secret_and_nonce() -> None:
    assert login_csrf(b"a" * 32, "n1") == login_csrf(b"a" * 32, "n1")
    assert login_csrf(b"a" * 32, "n1") != login_csrf(b"b" * 32, "n1")
    assert login_csrf(b"a" * 32, "n1") != login_csrf(b"a" * 32, "n2")


# --- against the app, on SQLite and PostgreSQL ------------------------------


def test_the_migration_makes_exactly_the_auth_tables(controller: Controller) -> None:
    engine = make_engine(controller.url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    auth = {"users", "web_sessions", "api_tokens", "login_attempts", "audit_log"}
    assert [d for d in diff if any(f"'{name}'" in repr(d) for name in auth)] == []


def test_sign_in_sets_a_safe_session_cookie_and_rehashes(
    tmp_path: Path, controller: Controller
) -> None:
    client = controller.client()
    response = sign_in(client, "Admin ", ADMIN_PASSWORD)  # usernames are case-insensitive
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = next(c for c in response.headers.get_list("set-cookie") if "xaso_session=" in c)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=43200" in cookie
    token = cookie.split("xaso_session=")[1].split(";")[0]
    me = client.get("/api/me").json()
    assert me["username"] == "admin" and me["kind"] == "user"
    with controller.app.state.xaso.sessions() as db:  # the cookie is not stored, its digest is
        assert db.scalar(sa.text("SELECT count(*) FROM web_sessions WHERE token_sha256 = :d"),
                         {"d": digest(token)}) == 1  # fmt: skip
        old_hash = db.scalar(sa.select(User.password_hash).where(User.username == "admin"))
    # A controller with a higher argon2 cost rehashes at the next sign-in.
    (tmp_path / "stronger").mkdir()
    config = write_config(tmp_path / "stronger", controller.url, time_cost=2)
    stronger = create_app(load_settings(config), clock=controller.clock)
    assert sign_in(TestClient(stronger), "admin", ADMIN_PASSWORD).status_code == 303
    stronger.state.xaso.engine.dispose()
    with controller.app.state.xaso.sessions() as db:
        new_hash = db.scalar(sa.select(User.password_hash).where(User.username == "admin"))
    assert old_hash is not None and new_hash is not None
    assert ",t=1," in old_hash and ",t=2," in new_hash


def test_csrf_is_required_on_every_state_change_made_with_the_cookie(
    controller: Controller,
) -> None:
    client = signed_in(controller)
    good = client.headers.pop("X-CSRF-Token")
    new_user = {"username": "lan", "role": "officer", "password": "mot-mat-khau-dai"}
    # JSON API: no header, a wrong header.
    refused = client.post("/api/users", json=new_user)
    assert refused.status_code == 403
    bilingual(refused, "error.csrf")
    assert (
        client.post("/api/users", json=new_user, headers={"X-CSRF-Token": "x"}).status_code == 403
    )
    # A form without the field, with another session's token.
    form = client.post("/users", data={**new_user, "display_name": "Lan"},
                       headers={"accept": "text/html"})  # fmt: skip
    assert form.status_code == 403 and "CSRF" in form.text
    assert client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    # Safe methods need none; with the token the change goes through.
    assert client.get("/api/users").status_code == 200
    done = client.post("/api/users", json=new_user, headers={"X-CSRF-Token": good})
    assert done.status_code == 201, done.text
    created = client.post(
        "/users",
        data={"username": "minh", "display_name": "Minh", "role": "technician",
              "password": "mot-mat-khau-dai", "csrf_token": good},
        follow_redirects=False,
    )  # fmt: skip
    assert created.status_code == 303
    # The sign-in form is protected too: its token is bound to its own cookie.
    fresh = controller.client()
    no_token = fresh.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert no_token.status_code == 403 and "Biểu mẫu đã hết hạn" in no_token.text


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


def test_sign_in_limits_lock_a_username_then_an_address(controller: Controller) -> None:
    def attempt(username: str, password: str) -> Any:
        return sign_in(controller.client(), username, password)  # a new browser each time

    for _ in range(4):
        assert attempt("admin", "wrong password").status_code == 401
    fifth = attempt("admin", "wrong password")
    assert fifth.status_code == 429
    assert "Vui lòng thử lại sau 15 phút" in fifth.text and "try again in 15 minutes" in fifth.text
    assert int(fifth.headers["retry-after"]) == 15 * 60
    # Locked: even the right password is refused, and that does not extend the lockout.
    assert attempt("admin", ADMIN_PASSWORD).status_code == 429
    controller.clock.now += 14 * 60
    assert attempt("admin", ADMIN_PASSWORD).status_code == 429
    controller.clock.now += 61
    assert attempt("admin", ADMIN_PASSWORD).status_code == 303
    # A success clears the username's count.
    assert attempt("admin", "wrong password").status_code == 401

    # Per address: 8 failures over different usernames (the test config's limit).
    controller.clock.now += 3600
    for name in ("a1", "a2", "a3", "a4", "a5", "a6", "a7"):
        assert attempt(name, "x").status_code == 401
    assert attempt("a8", "x").status_code == 429
    assert attempt("admin", ADMIN_PASSWORD).status_code == 429
    audit = controller.audit()
    assert [e.action for e in audit].count("session.login") == 1


def test_roles_hold_on_routes_that_require_a_permission(controller: Controller) -> None:
    router = APIRouter()

    @router.post("/api/test-broadcast")
    def play(who: Annotated[Principal, Depends(require(Permission.BROADCAST))]) -> dict[str, str]:
        return {"by": who.username}

    controller.app.include_router(router)
    controller.add_user("ky-thuat", "technician")
    controller.add_user("phat-thanh", "broadcaster")
    controller.add_user("can-bo", "officer")
    tech = signed_in(controller, "ky-thuat", "mot-mat-khau-dai")
    assert tech.post("/api/test-broadcast").status_code == 403
    assert tech.get("/api/users").status_code == 403
    assert tech.get("/users", headers={"accept": "text/html"}).status_code == 403
    assert signed_in(controller, "phat-thanh", "mot-mat-khau-dai").post(
        "/api/test-broadcast"
    ).json() == {"by": "phat-thanh"}
    officer = signed_in(controller, "can-bo", "mot-mat-khau-dai")
    assert officer.post("/api/test-broadcast").status_code == 403
    assert officer.get("/api/audit").status_code == 403
    assert controller.client().post("/api/test-broadcast").status_code == 401
    # The menu shows only what the role may open.
    page = officer.get("/").text
    assert 'href="/users"' not in page and 'href="/audit"' not in page


def test_sessions_end_on_logout_deactivation_and_idle(controller: Controller) -> None:
    admin = signed_in(controller)
    controller.add_user("lan", "broadcaster")
    lan = signed_in(controller, "lan", "mot-mat-khau-dai")
    assert lan.get("/api/me").status_code == 200
    off = admin.patch("/api/users/lan", json={"active": False})
    assert off.status_code == 200 and off.json()["active"] is False
    assert lan.get("/api/me").status_code == 401
    assert sign_in(controller.client(), "lan", "mot-mat-khau-dai").status_code == 401
    admin.patch("/api/users/lan", json={"active": True})

    lan = signed_in(controller, "lan", "mot-mat-khau-dai")
    csrf = lan.headers["X-CSRF-Token"]
    assert lan.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert lan.get("/api/me").status_code == 401

    lan = signed_in(controller, "lan", "mot-mat-khau-dai")
    controller.clock.now += 119 * 60
    assert lan.get("/api/me").status_code == 200  # activity keeps it alive...
    controller.clock.now += 119 * 60
    assert lan.get("/api/me").status_code == 200
    controller.clock.now += 121 * 60  # ...idleness ends it
    assert lan.get("/api/me").status_code == 401
    # A page asks to sign in again, and comes back afterwards.
    page = lan.get("/tokens?x=1", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/tokens%3Fx%3D1"


def test_admins_cannot_lock_themselves_or_the_controller_out(controller: Controller) -> None:
    admin = signed_in(controller)
    for change in ({"role": "officer"}, {"active": False}):
        refused = admin.patch("/api/users/admin", json=change)
        assert refused.status_code == 409
        bilingual(refused, "error.self_lockout")
    controller.add_user("admin2", "admin")
    other = signed_in(controller, "admin2", "mot-mat-khau-dai")
    assert other.patch("/api/users/admin", json={"role": "officer"}).status_code == 200
    assert admin.get("/api/users").status_code == 403  # demoted at once
    last = other.patch("/api/users/admin2", json={"active": False})
    assert last.status_code == 409


def test_bad_input_gets_a_bilingual_4xx(controller: Controller) -> None:
    admin = signed_in(controller)
    cases = [
        (admin.post("/api/users", json={"username": "Bad Name!", "role": "admin",
                                        "password": "mot-mat-khau-dai"}), 422, "error.invalid"),
        (admin.post("/api/users", json={"username": "lan", "role": "chief",
                                        "password": "mot-mat-khau-dai"}), 422, "error.invalid"),
        (admin.post("/api/users", json={"username": "lan", "role": "officer",
                                        "password": "short"}), 422, "error.invalid"),
        (admin.post("/api/users", content=b"{not json", headers={"content-type":
                                                                 "application/json"}), 422,
         "error.invalid"),
        (admin.post("/api/users", json={"username": "admin", "role": "officer",
                                        "password": "mot-mat-khau-dai"}), 409,
         "error.username_taken"),
        (admin.patch("/api/users/nobody", json={"role": "officer"}), 404, "error.no_user"),
        (admin.post("/api/tokens", json={"name": "", "role": "officer"}), 422, "error.invalid"),
        (admin.delete("/api/tokens/0"), 422, "error.invalid"),
        (admin.get("/api/audit?limit=0"), 422, "error.invalid"),
        (admin.put("/api/users"), 405, "error.method"),
        (admin.get("/api/nothing-here"), 404, "error.not_found"),
    ]  # fmt: skip
    for response, status, code in cases:
        assert response.status_code == status, response.text
        bilingual(response, code)
    # The forms answer with the page and the reason in both languages.
    csrf = admin.headers["X-CSRF-Token"]
    form_cases = [
        ("/users", {"username": "x", "role": "officer", "password": "mot-mat-khau-dai"}, 422),
        ("/users", {"username": "lan", "role": "chief", "password": "mot-mat-khau-dai"}, 422),
        ("/users", {"username": "lan", "role": "officer", "password": "ngan"}, 422),
        ("/users", {"username": "admin", "role": "officer", "password": "mot-mat-khau-dai"}, 409),
        ("/users/nobody/role", {"role": "officer"}, 404),
        ("/users/admin/active", {"active": "maybe"}, 422),
        ("/users/admin/active", {"active": "false"}, 409),
        ("/tokens", {"name": " ", "role": "officer"}, 422),
        ("/tokens/abc/revoke", {}, 404),
        ("/tokens/99999999999/revoke", {}, 404),
    ]
    for path, data, status in form_cases:
        page = admin.post(path, data={**data, "csrf_token": csrf}, headers={"accept": "text/html"})
        assert page.status_code == status, (path, page.text)
        assert 'class="error"' in page.text and 'lang="en"' in page.text
    assert admin.get("/audit?before_id=x", headers={"accept": "text/html"}).status_code == 422


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
    assert "token.revoke" in page and "user.create" not in page
