"""API tokens: the admin page (create, shown once; revoke) and the JSON API. A commune
admin lists and revokes their commune's users' tokens; the province's, every one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal, Role
from controller.auth.tokens import create_token, list_tokens, revoke_token
from controller.db.auth_tables import ApiToken, User
from controller.deps import DbSession, app_state, commune_names, require
from controller.i18n import Refusal
from controller.web.routes import ERRORS, error_responses, render

router = APIRouter()
Admin = Annotated[Principal, Depends(require(Permission.MANAGE_USERS))]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    role: Role
    owner: str
    commune: str | None = Field(description="Its owner's commune (none: the province)")
    created_ms: int
    last_used_ms: int | None
    revoked_ms: int | None

    @classmethod
    def of(cls, row: ApiToken, owner: User) -> TokenOut:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            role=Role(row.role),
            owner=owner.username,
            commune=owner.commune,
            created_ms=row.created_ms,
            last_used_ms=row.last_used_ms,
            revoked_ms=row.revoked_ms,
        )


class TokenCreate(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    role: Role


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once, never stored in clear")


def _tokens_page(
    request: Request,
    db: DbSession,
    who: Principal,
    *,
    status_code: int = 200,
    error: Refusal | None = None,
    new_token: str = "",
) -> HTMLResponse:
    return render(
        request,
        "tokens.html",
        status_code=status_code,
        tokens=list_tokens(db, who.commune),
        commune_names=commune_names(request) if who.commune is None else {},
        roles=list(Role),
        error=error,
        new_token=new_token,
    )


@router.get("/tokens", response_class=HTMLResponse, include_in_schema=False)
def tokens_page(request: Request, db: DbSession, who: Admin) -> Response:
    return _tokens_page(request, db, who)


@router.post("/tokens", response_class=HTMLResponse, include_in_schema=False)
def tokens_create(
    request: Request,
    db: DbSession,
    who: Admin,
    name: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
) -> Response:
    try:
        token, row = create_token(db, who, name, role, app_state(request).now_ms())
    except Refusal as refusal:
        db.rollback()
        return _tokens_page(request, db, who, status_code=refusal.status, error=refusal)
    audit(db, who, "token.create", f"token:{row.id}", {"name": row.name, "role": row.role})
    db.commit()
    response = _tokens_page(request, db, who, status_code=201, new_token=token)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/tokens/{token_id}/revoke", include_in_schema=False)
def tokens_revoke(request: Request, db: DbSession, who: Admin, token_id: str) -> Response:
    try:
        row = revoke_token(db, _token_id(token_id), app_state(request).now_ms(), who.commune)
    except Refusal as refusal:
        return _tokens_page(request, db, who, status_code=refusal.status, error=refusal)
    audit(db, who, "token.revoke", f"token:{row.id}", {"name": row.name})
    db.commit()
    return RedirectResponse("/tokens", status_code=303)


def _token_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise Refusal(404, "error.no_token", id=text[:20])
    return int(text)


@router.get("/api/tokens", response_model=list[TokenOut], tags=["tokens"], responses=ERRORS)
def api_tokens(db: DbSession, who: Admin) -> list[TokenOut]:
    """Every API token the caller manages (a commune admin: their commune's users'), newest
    first; never the tokens themselves."""
    return [TokenOut.of(row, owner) for row, owner in list_tokens(db, who.commune)]


@router.post(
    "/api/tokens",
    response_model=TokenCreated,
    status_code=201,
    tags=["tokens"],
    responses=ERRORS,
)
def api_create_token(
    request: Request, db: DbSession, who: Admin, body: TokenCreate
) -> TokenCreated:
    """A new token for an integration; the response is the only time it is shown."""
    token, row = create_token(db, who, body.name, body.role.value, app_state(request).now_ms())
    audit(db, who, "token.create", f"token:{row.id}", {"name": row.name, "role": row.role})
    db.commit()
    owner = db.get(User, row.owner_id)
    assert owner is not None  # the caller
    return TokenCreated(**TokenOut.of(row, owner).model_dump(), token=token)


@router.delete(
    "/api/tokens/{token_id}",
    response_model=TokenOut,
    tags=["tokens"],
    responses=error_responses(401, 403, 404, 422),
)
def api_revoke_token(request: Request, db: DbSession, who: Admin, token_id: TokenId) -> TokenOut:
    """Revoke a token at once; revoking it again changes nothing. Another commune's: 404."""
    row = revoke_token(db, token_id, app_state(request).now_ms(), who.commune)
    audit(db, who, "token.revoke", f"token:{row.id}", {"name": row.name})
    db.commit()
    owner = db.get(User, row.owner_id)
    assert owner is not None  # checked by revoke_token
    return TokenOut.of(row, owner)
