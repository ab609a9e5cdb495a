"""The gate before air: whether what someone prepares may reach a speaker now.

The one place that decides (issue 14). Scheduling and broadcasting consult it
before they publish a document or a command; the rule itself, ``ruling``, is
pure. With the commune's ``approval_required`` on, what is prepared by someone
who may not approve waits as "chờ duyệt" (an ``approvals`` row) until a leader
decides; an emergency airs at once and waits to be reviewed ("cần xem lại").
Off (the default), everything airs as it always did.

The setting is per commune (controller/auth/tenancy.py ``setting_key``): a
commune's under its id, the province's (and a site of one commune's) under
``LOCAL_COMMUNE``, the one site-wide switch it always was. What a commune user
prepares is held by their commune's setting and waits for their commune's
leaders (``approvals.commune``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.auth import tenancy
from controller.db.broadcast_tables import ApprovalRow, CommuneSettingRow
from controller.radio.targets import Clock, Target
from plumbing.clock import wall_ms

LOCAL_COMMUNE = "local"  # one controller, one commune, until communes are tenants
APPROVAL_REQUIRED = "approval_required"


class Ruling(StrEnum):
    AIR = "air"
    HOLD = "hold"  # wait for a leader's approval
    REVIEW = "review"  # air now, and a leader reviews it afterwards


def ruling(*, required: bool, level: str, approved: bool) -> Ruling:
    """``approved``: no approval is owed (the author may approve, it came from above,
    or a leader approved it)."""
    if not required or approved:
        return Ruling.AIR
    return Ruling.REVIEW if level == "emergency" else Ruling.HOLD


def _targets(targets: Sequence[Target]) -> list[dict[str, Any]]:
    return [{"kind": t.kind, "id": t.id} for t in targets]


class ApprovalGate:
    """The commune's approval setting and the rows of what it holds back."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        commune: str = LOCAL_COMMUNE,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.commune = commune
        self.clock = clock

    def key(self, commune: str | None) -> str:
        """The ``commune_settings`` and ``approvals`` key of a commune (None: the province)."""
        return tenancy.setting_key(commune, self.commune)

    def required(self, session: Session | None = None, *, commune: str | None = None) -> bool:
        """Whether ``commune``'s approval is on (None: the province's, the site-wide one)."""
        if session is None:
            with self.sessions() as own:
                return self.required(own, commune=commune)
        row = session.get(CommuneSettingRow, (self.key(commune), APPROVAL_REQUIRED))
        return bool(row is not None and row.value is True)

    def set_required(
        self, session: Session, on: bool, *, by: str, commune: str | None = None
    ) -> bool:
        """Set it in ``session`` (the caller commits, with its audit entry); was it changed?"""
        key = (self.key(commune), APPROVAL_REQUIRED)
        row = session.get(CommuneSettingRow, key, with_for_update=True)
        if row is None:
            row = CommuneSettingRow(commune=key[0], name=APPROVAL_REQUIRED, value=False)
            session.add(row)
        changed = row.value is not on
        row.value, row.updated_by, row.updated_ms = on, by[:140], self.clock()
        return changed

    def rule(
        self, session: Session, *, level: str, approved: bool, commune: str | None = None
    ) -> Ruling:
        required = self.required(session, commune=commune)
        return ruling(required=required, level=level, approved=approved)

    def hold_entry(
        self,
        session: Session,
        schedule_id: int,
        version: int,
        *,
        by: str,
        label: str,
        target: Target,
        commune: str | None = None,
    ) -> ApprovalRow:
        """The entry waits: its pending request, made anew for each change (``version``)."""
        self.withdraw_entry(session, schedule_id)
        return self._add(
            session, "schedule", "pending", by=by, label=label, targets=[target],
            schedule_id=schedule_id, request={"version": version}, commune=commune,
        )  # fmt: skip

    def withdraw_entry(self, session: Session, schedule_id: int) -> None:
        """A change or a delete makes what waited for this entry moot."""
        for row in session.scalars(
            select(ApprovalRow)
            .where(ApprovalRow.schedule_id == schedule_id, ApprovalRow.state == "pending")
            .with_for_update()
        ):
            row.state, row.decided_ms = "withdrawn", self.clock()

    def hold_play(
        self,
        session: Session,
        *,
        by: str,
        label: str,
        targets: Sequence[Target],
        request: dict[str, Any],
        commune: str | None = None,
    ) -> ApprovalRow:
        """A play-now waits, kept whole: approving it sends it then."""
        return self._add(
            session, "play", "pending", by=by, label=label, targets=targets, request=request,
            commune=commune,
        )  # fmt: skip

    def flag_emergency(
        self,
        session: Session,
        *,
        by: str,
        label: str,
        targets: Sequence[Target],
        broadcast_id: str | None = None,
        schedule_id: int | None = None,
        commune: str | None = None,
    ) -> ApprovalRow:
        """An emergency aired without approval (a broadcast, or an emergency entry):
        a leader reviews it afterwards."""
        return self._add(
            session, "emergency", "review", by=by, label=label, targets=targets,
            broadcast_id=broadcast_id, schedule_id=schedule_id, commune=commune,
        )  # fmt: skip

    def _add(
        self,
        session: Session,
        kind: str,
        state: str,
        *,
        by: str,
        label: str,
        targets: Sequence[Target],
        schedule_id: int | None = None,
        broadcast_id: str | None = None,
        request: dict[str, Any] | None = None,
        commune: str | None = None,
    ) -> ApprovalRow:
        row = ApprovalRow(
            commune=self.key(commune),
            kind=kind,
            state=state,
            label=label[:200],
            targets=_targets(targets),
            schedule_id=schedule_id,
            broadcast_id=broadcast_id,
            request=request or {},
            prepared_by=by[:140],
            prepared_ms=self.clock(),
            reason="",
        )
        session.add(row)
        session.flush()
        return row
