"""API tokens for integrations: made, shown once, looked up by digest, revoked.

A token is `xaso_` and 43 random characters; only its SHA-256 is kept, with
its first characters so people can tell tokens apart in a list. A token may
do what its role allows and what its owner still may (`token_permissions`),
and stops working when its owner is deactivated. Tokens are listed and revoked
like their owners are managed (controller/auth/tenancy.py): a commune admin, their
commune's users' tokens only; the province, every one.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.auth import tenancy
from controller.auth.roles import Principal, Role, token_permissions
from controller.auth.security import API_TOKEN_PREFIX, digest, new_api_token
from controller.db.auth_tables import ApiToken, User
from controller.i18n import Refusal

PREFIX_CHARS = len(API_TOKEN_PREFIX) + 6
LAST_USED_EVERY_MS = 60_000


def create_token(
    db: Session, owner: Principal, name: str, role: str, now_ms: int
) -> tuple[str, ApiToken]:
    """A new token: its only clear copy (to show once) and its row; the caller commits."""
    clean = " ".join(name.split())
    if not 1 <= len(clean) <= 100 or not clean.isprintable():
        raise Refusal(422, "error.bad_token_name")
    try:
        checked = Role(role)
    except ValueError:
        raise Refusal(422, "error.bad_role") from None
    token = new_api_token()
    row = ApiToken(
        token_sha256=digest(token),
        prefix=token[:PREFIX_CHARS],
        name=clean,
        role=checked.value,
        owner_id=owner.user_id,
        created_ms=now_ms,
    )
    db.add(row)
    db.flush()
    return token, row


def list_tokens(db: Session, scope: str | None = None) -> list[tuple[ApiToken, User]]:
    """Every token with its owner, newest first; ``scope``: a commune's users' only."""
    query = select(ApiToken, User).join(User, User.id == ApiToken.owner_id)
    if scope is not None:
        query = query.where(User.commune == scope)
    rows = db.execute(query.order_by(ApiToken.id.desc())).all()
    return [(tok, owner) for tok, owner in rows]


def revoke_token(db: Session, token_id: int, now_ms: int, scope: str | None = None) -> ApiToken:
    """Revoke a token whose owner ``scope`` manages (another commune's: no such token)."""
    row = db.get(ApiToken, token_id)
    owner = db.get(User, row.owner_id) if row is not None else None
    if row is None or owner is None or not tenancy.may_manage_user(scope, owner.commune):
        raise Refusal(404, "error.no_token", id=token_id)
    if row.revoked_ms is None:
        row.revoked_ms = now_ms
    return row


def token_principal(db: Session, token: str, ip: str, now_ms: int) -> Principal | None:
    """Who this bearer token acts for, if it is live and its owner active."""
    if not token.startswith(API_TOKEN_PREFIX) or len(token) > 200:
        return None
    found = db.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.owner_id)
        .where(ApiToken.token_sha256 == digest(token))
    ).first()
    if found is None:
        return None
    row, owner = found
    if row.revoked_ms is not None or not owner.active:
        return None
    if row.last_used_ms is None or now_ms - row.last_used_ms >= LAST_USED_EVERY_MS:
        row.last_used_ms = now_ms
        db.commit()
    role = Role(row.role)
    return Principal(
        kind="token",
        user_id=owner.id,
        username=owner.username,
        display_name=owner.display_name,
        role=role,
        permissions=token_permissions(role, Role(owner.role)),
        ip=ip,
        token_id=row.id,
        token_name=row.name,
        commune=owner.commune,
    )
