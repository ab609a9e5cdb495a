"""Users and roles: the permission matrix, routes that require one, no self-lockout, bad input.

Against the real app on SQLite and PostgreSQL, as in test_controller_auth.py
(the app and its helpers in tests/auth_helpers.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from controller.auth.roles import (
    PERMISSIONS,
    Permission,
    Principal,
    Role,
    allows,
    token_permissions,
)
from controller.deps import require
from tests.auth_helpers import Controller, bilingual, signed_in

# --- pure parts ---------------------------------------------------------------


def test_roles_matrix() -> None:
    expected = {
        Role.ADMIN: set(Permission),
        Role.BROADCASTER: {"view_fleet", "broadcast", "manage_schedules", "manage_clips",
                           "view_reports"},
        Role.TECHNICIAN: {"view_fleet", "manage_devices", "view_reports"},
        Role.OFFICER: {"view_fleet", "view_reports"},
        Role.LEADER: {"view_fleet", "view_reports", "approve"},
    }  # fmt: skip
    for role, permissions in expected.items():
        assert PERMISSIONS[role] == {Permission(p) for p in permissions}
    assert not allows(Role.TECHNICIAN, Permission.BROADCAST)
    assert not allows(Role.OFFICER, Permission.MANAGE_SCHEDULES)
    assert not allows(Role.BROADCASTER, Permission.MANAGE_USERS)
    assert not allows(Role.BROADCASTER, Permission.APPROVE)
    assert not allows(Role.LEADER, Permission.BROADCAST)
    # A token never does more than its owner may now.
    assert token_permissions(Role.ADMIN, Role.OFFICER) == PERMISSIONS[Role.OFFICER]
    assert token_permissions(Role.BROADCASTER, Role.ADMIN) == PERMISSIONS[Role.BROADCASTER]


# --- against the app, on SQLite and PostgreSQL ------------------------------


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
