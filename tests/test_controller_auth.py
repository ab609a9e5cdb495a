"""Sign-in and sessions: passwords, the session cookie and its CSRF, sign-in limits, idle ends.

The pure parts are checked directly; everything else runs against the real
app on a SQLite file and on a fresh PostgreSQL database (`database_url`),
through FastAPI's TestClient (the app's full ASGI stack, in process). Users
and roles are in test_controller_users.py, API tokens and the audit log in
test_controller_tokens_audit.py; the app and its helpers in tests/auth_helpers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient

from controller.app import create_app
from controller.auth.passwords import Passwords
from controller.auth.security import LoginPolicy, digest, login_csrf
from controller.db.auth_tables import User
from controller.db.base import Base
from controller.db.engine import make_engine
from controller.settings import load_settings
from tests.auth_helpers import (
    ADMIN_PASSWORD,
    Controller,
    bilingual,
    sign_in,
    signed_in,
    write_config,
)

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


def test_sign_in_limits_lock_a_username_then_an_address(controller: Controller) -> None:
    def attempt(username: str, password: str) -> Any:
        return sign_in(controller.client(), username, password)  # a new browser each time

    for _ in range(4):
        assert attempt("admin", "wrong password").status_code == 401
    fifth = attempt("admin", "wrong password")
    assert fifth.status_code == 429
    assert "Vui lòng thử lại sau 15 phút" in fifth.text and "try again in 15 minutes" in fifth.text
    assert int(fifth.headers["retry-after"]) == 15 * 60
    # Locked: even the right password from the guessing address (every test client is
    # "testclient") is refused, and that does not extend the lockout.
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


def test_wrong_guesses_elsewhere_never_lock_the_user_out_of_a_known_address(
    controller: Controller,
) -> None:
    def attempt(ip: str, password: str) -> Any:
        return sign_in(TestClient(controller.app, client=(ip, 50000)), "admin", password)

    office, attacker, other, phone = "10.0.0.1", "203.0.113.6", "203.0.113.7", "10.0.0.9"
    assert attempt(office, ADMIN_PASSWORD).status_code == 303  # the office is known now
    for _ in range(4):
        assert attempt(attacker, "guess").status_code == 401
    assert attempt(attacker, "guess").status_code == 429  # the attacker's address is locked
    # The account is held back for every address it has never signed in from...
    assert attempt(other, "guess").status_code == 429
    assert attempt(phone, ADMIN_PASSWORD).status_code == 429
    # ...but the admin signs in from the office, again and again, with guesses going on.
    for _ in range(3):
        controller.clock.now += 60
        assert attempt(attacker, "guess").status_code == 429
        assert attempt(office, ADMIN_PASSWORD).status_code == 303
    # The office's own failures still count, for the office alone.
    controller.clock.now += 1
    for _ in range(4):
        assert attempt(office, "typo").status_code == 401
    assert attempt(office, "typo").status_code == 429
    assert attempt(office, ADMIN_PASSWORD).status_code == 429
    # It all ends with the lockout; the phone gets in and is known from then on.
    controller.clock.now += 15 * 60 + 1
    assert attempt(phone, ADMIN_PASSWORD).status_code == 303
    assert attempt(office, ADMIN_PASSWORD).status_code == 303
    logins = [e for e in controller.audit() if e.action == "session.login"]
    assert [e.ip for e in logins] == [office, office, office, office, phone, office]


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
