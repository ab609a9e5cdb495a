"""The audit log: who changed what, when and from where.

Every broadcast, schedule and configuration change calls `audit` in the
same database session as the change itself, before the commit, so a change
and its record are stored together or not at all:

    audit(db, principal, "schedule.publish", f"group:{group}", {"version": v})
    db.commit()

Actions are `area.verb` (`user.create`, `broadcast.emergency`); the target
names the thing changed (`user:lan`, `group:thon-1`, `device:loa-3`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.auth.roles import Principal
from controller.db.auth_tables import AuditEntry
from plumbing.clock import wall_ms


def audit(
    db: Session,
    principal: Principal | None,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
    *,
    at_ms: int | None = None,
    ip: str = "",
    actor_name: str = "",
    commune: str | None = None,
) -> AuditEntry:
    """Record one change; `principal` None means the system itself (or an anonymous caller,
    such as one signing in: ``commune`` is then theirs, given)."""
    entry = AuditEntry(
        at_ms=wall_ms() if at_ms is None else at_ms,
        actor_kind=principal.kind if principal else "system",
        actor_user_id=principal.user_id if principal else None,
        actor_token_id=principal.token_id if principal else None,
        actor_name=(principal.name if principal else actor_name or "system")[:140],
        action=action[:64],
        target=target[:200],
        details=dict(details or {}),
        ip=(principal.ip if principal else ip)[:45],
        commune=principal.commune if principal else commune,
    )
    db.add(entry)
    return entry


def audit_entries(
    db: Session,
    *,
    limit: int = 50,
    before_id: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    commune: str | None = None,
) -> list[AuditEntry]:
    """The newest entries first; page on with `before_id` (the last id seen). ``commune``:
    a commune admin's, the entries of their commune's users only (None: every entry)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if commune is not None:
        query = query.where(AuditEntry.commune == commune)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if action:
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if actor:
        query = query.where(AuditEntry.actor_name.startswith(actor, autoescape=True))
    return list(db.scalars(query))
