"""Users: the admin page (create, set role, deactivate) and the JSON API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from controller.auth.accounts import create_user, find_user, list_users, update_user
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal, Role
from controller.db.auth_tables import User
from controller.deps import DbSession, app_state, require
from controller.i18n import Refusal
from controller.web.routes import ERRORS, error_responses, render

router = APIRouter()
Admin = Annotated[Principal, Depends(require(Permission.MANAGE_USERS))]
USERNAME_PATH = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,31}$"
Username = Annotated[str, Path(pattern=USERNAME_PATH, max_length=32)]


class UserOut(BaseModel):
    username: str
    display_name: str
    role: Role
    active: bool
    created_ms: int

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            username=user.username,
            display_name=user.display_name,
            role=Role(user.role),
            active=user.active,
            created_ms=user.created_ms,
        )


class UserCreate(BaseModel):
    username: Annotated[str, Field(min_length=2, max_length=32, pattern=USERNAME_PATH)]
    display_name: Annotated[str, Field(max_length=100)] = ""
    role: Role
    password: Annotated[str, Field(min_length=10, max_length=256)]


class UserPatch(BaseModel):
    display_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    role: Role | None = None
    active: bool | None = None
    password: Annotated[str, Field(min_length=10, max_length=256)] | None = None


def _users_page(
    request: Request, db: DbSession, status_code: int = 200, error: Refusal | None = None
) -> HTMLResponse:
    return render(
        request,
        "users.html",
        status_code=status_code,
        users=list_users(db),
        roles=list(Role),
        error=error,
        created=request.query_params.get("created", "")[:32],
        updated=request.query_params.get("updated", "")[:32],
    )


@router.get("/users", response_class=HTMLResponse, include_in_schema=False)
def users_page(request: Request, db: DbSession, who: Admin) -> Response:
    return _users_page(request, db)


@router.post("/users", include_in_schema=False)
def users_create(
    *,
    request: Request,
    db: DbSession,
    who: Admin,
    username: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    state = app_state(request)
    try:
        user = create_user(
            db,
            state.auth.passwords,
            username=username,
            display_name=display_name,
            role=role,
            password=password,
            now_ms=state.now_ms(),
        )
    except Refusal as refusal:
        db.rollback()
        return _users_page(request, db, refusal.status, refusal)
    audit(db, who, "user.create", f"user:{user.username}", {"role": user.role})
    db.commit()
    return RedirectResponse(f"/users?created={user.username}", status_code=303)


def _change(
    request: Request,
    db: DbSession,
    who: Principal,
    username: str,
    *,
    role: str | None = None,
    active: bool | None = None,
) -> Response:
    try:
        user = find_user(db, username)
        passwords = app_state(request).auth.passwords
        done = update_user(db, passwords, who, user, role=role, active=active)
    except Refusal as refusal:
        db.rollback()
        return _users_page(request, db, refusal.status, refusal)
    if done:
        audit(db, who, "user.update", f"user:{user.username}", done)
        db.commit()
    return RedirectResponse(f"/users?updated={user.username}", status_code=303)


@router.post("/users/{username}/role", include_in_schema=False)
def users_set_role(
    request: Request, db: DbSession, who: Admin, username: str, role: Annotated[str, Form()] = ""
) -> Response:
    return _change(request, db, who, username, role=role)


@router.post("/users/{username}/active", include_in_schema=False)
def users_set_active(
    request: Request,
    db: DbSession,
    who: Admin,
    username: str,
    active: Annotated[str, Form()] = "",
) -> Response:
    if active not in ("true", "false"):
        return _users_page(request, db, 422, Refusal(422, "error.invalid", problems="active"))
    return _change(request, db, who, username, active=active == "true")


@router.get("/api/users", response_model=list[UserOut], tags=["users"], responses=ERRORS)
def api_users(db: DbSession, who: Admin) -> list[UserOut]:
    """Every user, active or not."""
    return [UserOut.of(u) for u in list_users(db)]


@router.post(
    "/api/users",
    response_model=UserOut,
    status_code=201,
    tags=["users"],
    responses=error_responses(401, 403, 409, 422),
)
def api_create_user(request: Request, db: DbSession, who: Admin, body: UserCreate) -> UserOut:
    """Add a user with a role; the password is stored only as an argon2id hash."""
    state = app_state(request)
    user = create_user(
        db,
        state.auth.passwords,
        username=body.username,
        display_name=body.display_name,
        role=body.role.value,
        password=body.password,
        now_ms=state.now_ms(),
    )
    audit(db, who, "user.create", f"user:{user.username}", {"role": user.role})
    db.commit()
    return UserOut.of(user)


@router.patch(
    "/api/users/{username}",
    response_model=UserOut,
    tags=["users"],
    responses=error_responses(401, 403, 404, 409, 422),
)
def api_update_user(
    request: Request, db: DbSession, who: Admin, username: Username, body: UserPatch
) -> UserOut:
    """Change a user's role, name, password or whether they may sign in.

    Deactivating a user or changing their password ends their sessions.
    """
    user = find_user(db, username)
    done = update_user(
        db,
        app_state(request).auth.passwords,
        who,
        user,
        role=body.role.value if body.role else None,
        active=body.active,
        display_name=body.display_name,
        password=body.password,
    )
    if done:
        audit(db, who, "user.update", f"user:{user.username}", done)
        db.commit()
    return UserOut.of(user)
