"""The audit log: a page for people and `/api/audit` for programs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from controller.auth.audit import audit_entries
from controller.auth.roles import Permission, Principal
from controller.db.auth_tables import AuditEntry
from controller.deps import DbSession, require
from controller.web.routes import ERRORS, render

router = APIRouter()
Auditor = Annotated[Principal, Depends(require(Permission.VIEW_AUDIT))]
ACTION = r"^[a-z0-9_.:-]{0,64}$"
ACTOR = r"^[^\x00-\x1f\x7f]{0,140}$"
PAGE = 50


class AuditOut(BaseModel):
    id: int
    at_ms: int
    actor_kind: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    ip: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditOut:
        return cls(
            id=e.id,
            at_ms=e.at_ms,
            actor_kind=e.actor_kind,
            actor=e.actor_name,
            action=e.action,
            target=e.target,
            details=e.details,
            ip=e.ip,
        )


@router.get("/api/audit", response_model=list[AuditOut], tags=["audit"], responses=ERRORS)
def api_audit(
    *,
    db: DbSession,
    who: Auditor,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE,
    before_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    action: Annotated[str, Query(pattern=ACTION)] = "",
    actor: Annotated[str, Query(pattern=ACTOR)] = "",
) -> list[AuditOut]:
    """Newest first. Page on with `before_id` = the last id of the previous page;
    `action` and `actor` match the start (`user.` gives every user change)."""
    entries = audit_entries(db, limit=limit, before_id=before_id, action=action, actor=actor)
    return [AuditOut.of(e) for e in entries]


@router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
def audit_page(
    *,
    request: Request,
    db: DbSession,
    who: Auditor,
    before_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    action: Annotated[str, Query(pattern=ACTION)] = "",
    actor: Annotated[str, Query(pattern=ACTOR)] = "",
) -> Response:
    entries = audit_entries(db, limit=PAGE, before_id=before_id, action=action, actor=actor)
    return render(
        request,
        "audit.html",
        entries=entries,
        action=action,
        actor=actor,
        older=entries[-1].id if len(entries) == PAGE else None,
    )
