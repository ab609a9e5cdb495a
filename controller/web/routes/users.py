"""Users: the admin page (create, set role and commune, deactivate) and the JSON API.

A commune admin sees and manages only their commune's users; a province admin,
everyone (controller/auth/tenancy.py). A user's commune is shown by its name.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from controller.auth.accounts import (
    UNCHANGED,
    check_commune,
    create_user,
    find_user,
    list_users,
    update_user,
)
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal, Role
from controller.db.auth_tables import User
from controller.deps import Communes, DbSession, app_state, commune_names, require
from controller.i18n import Refusal
from controller.web.routes import ERRORS, error_responses, render
from protocol.topics import ID_PATTERN

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
    commune: str | None = Field(description="The commune's id; null: the province")
    commune_name: str | None = Field(description='The commune\'s name ("Xã Phú An")')

    @classmethod
    def of(cls, user: User, names: dict[str, str] | None = None) -> UserOut:
        return cls(
            username=user.username,
            display_name=user.display_name,
            role=Role(user.role),
            active=user.active,
            created_ms=user.created_ms,
            commune=user.commune,
            commune_name=(names or {}).get(user.commune or "", user.commune),
        )


CommuneId = Annotated[str, Field(pattern=f"^({ID_PATTERN})?$", max_length=48)]


class UserCreate(BaseModel):
    username: Annotated[str, Field(min_length=2, max_length=32, pattern=USERNAME_PATH)]
    display_name: Annotated[str, Field(max_length=100)] = ""
    role: Role
    password: Annotated[str, Field(min_length=10, max_length=256)]
    commune: CommuneId | None = Field(
        None,
        description="The commune it acts within; omitted: the creator's (a province "
        "admin's: the province)",
    )


class UserPatch(BaseModel):
    display_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    role: Role | None = None
    active: bool | None = None
    password: Annotated[str, Field(min_length=10, max_length=256)] | None = None
    commune: CommuneId | None = Field(None, description='"": the province; omitted: unchanged')


def _users_page(
    request: Request,
    db: DbSession,
    who: Principal,
    status_code: int = 200,
    error: Refusal | None = None,
) -> HTMLResponse:
    names = commune_names(request)
    return render(
        request,
        "users.html",
        status_code=status_code,
        users=list_users(db, who.commune),
        roles=list(Role),
        communes=names,
        mine=who.commune,
        error=error,
        created=request.query_params.get("created", "")[:32],
        updated=request.query_params.get("updated", "")[:32],
    )


@router.get("/users", response_class=HTMLResponse, include_in_schema=False)
def users_page(request: Request, db: DbSession, who: Admin) -> Response:
    return _users_page(request, db, who)


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
    commune: Annotated[str, Form()] = "",
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
            commune=check_commune(who.commune, commune or who.commune, commune_names(request)),
        )
    except Refusal as refusal:
        db.rollback()
        return _users_page(request, db, who, refusal.status, refusal)
    audit(db, who, "user.create", f"user:{user.username}", _created(user))
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
    commune: str | None = None,
) -> Response:
    try:
        user = find_user(db, username, who.commune)
        passwords = app_state(request).auth.passwords
        moved = (
            UNCHANGED
            if commune is None
            else check_commune(who.commune, commune, commune_names(request))
        )
        done = update_user(db, passwords, who, user, role=role, active=active, commune=moved)
    except Refusal as refusal:
        db.rollback()
        return _users_page(request, db, who, refusal.status, refusal)
    if done:
        audit(db, who, "user.update", f"user:{user.username}", done)
        db.commit()
    return RedirectResponse(f"/users?updated={user.username}", status_code=303)


@router.post("/users/{username}/role", include_in_schema=False)
def users_set_role(
    request: Request, db: DbSession, who: Admin, username: str, role: Annotated[str, Form()] = ""
) -> Response:
    return _change(request, db, who, username, role=role)


@router.post("/users/{username}/commune", include_in_schema=False)
def users_set_commune(
    request: Request,
    db: DbSession,
    who: Admin,
    username: str,
    commune: Annotated[str, Form()] = "",
) -> Response:
    return _change(request, db, who, username, commune=commune)


@router.post("/users/{username}/active", include_in_schema=False)
def users_set_active(
    request: Request,
    db: DbSession,
    who: Admin,
    username: str,
    active: Annotated[str, Form()] = "",
) -> Response:
    if active not in ("true", "false"):
        refused = Refusal(422, "error.invalid", problems="active")
        return _users_page(request, db, who, 422, refused)
    return _change(request, db, who, username, active=active == "true")


@router.get("/api/users", response_model=list[UserOut], tags=["users"], responses=ERRORS)
def api_users(db: DbSession, who: Admin, names: Communes) -> list[UserOut]:
    """Every user, active or not (a commune admin: their commune's)."""
    return [UserOut.of(u, names) for u in list_users(db, who.commune)]


@router.post(
    "/api/users",
    response_model=UserOut,
    status_code=201,
    tags=["users"],
    responses=error_responses(401, 403, 409, 422),
)
def api_create_user(
    request: Request, db: DbSession, who: Admin, body: UserCreate, names: Communes
) -> UserOut:
    """Add a user with a role; the password is stored only as an argon2id hash.

    A commune admin adds users of their commune only (403 for another)."""
    state = app_state(request)
    wanted = who.commune if body.commune is None else body.commune
    user = create_user(
        db,
        state.auth.passwords,
        username=body.username,
        display_name=body.display_name,
        role=body.role.value,
        password=body.password,
        now_ms=state.now_ms(),
        commune=check_commune(who.commune, wanted, names),
    )
    audit(db, who, "user.create", f"user:{user.username}", _created(user))
    db.commit()
    return UserOut.of(user, names)


def _created(user: User) -> dict[str, object]:
    done: dict[str, object] = {"role": user.role}
    if user.commune:
        done["commune"] = user.commune
    return done


@router.patch(
    "/api/users/{username}",
    response_model=UserOut,
    tags=["users"],
    responses=error_responses(401, 403, 404, 409, 422),
)
def api_update_user(
    *,
    request: Request,
    db: DbSession,
    who: Admin,
    username: Username,
    body: UserPatch,
    names: Communes,
) -> UserOut:
    """Change a user's role, name, password, commune or whether they may sign in.

    Deactivating a user or changing their password or commune ends their sessions.
    A commune admin sees only their commune's users (another's: 404).
    """
    user = find_user(db, username, who.commune)
    moved = UNCHANGED if body.commune is None else check_commune(who.commune, body.commune, names)
    done = update_user(
        db,
        app_state(request).auth.passwords,
        who,
        user,
        role=body.role.value if body.role else None,
        active=body.active,
        display_name=body.display_name,
        password=body.password,
        commune=moved,
    )
    if done:
        audit(db, who, "user.update", f"user:{user.username}", done)
        db.commit()
    return UserOut.of(user, names)
