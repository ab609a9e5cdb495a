"""The leaders' desk: what waits for approval, and their decisions on it.

The gate (controller.radio.approval_gate) holds things back; this desk lets
them go. Approving a schedule entry puts it in its target's document and
publishes it; approving a play-now sends it then, in its author's name. A
rejection needs a reason, which its author reads. An emergency, sent at once,
waits here to be marked reviewed. A decision is claimed first (``pending`` to
``deciding``) so two leaders cannot send one play twice.

Each item is its commune's (``approvals.commune``, the gate's key): a commune's
leader lists and decides only their commune's items (another's is not found);
the province's leaders see every commune's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from controller.auth import tenancy
from controller.db.broadcast_tables import ApprovalRow
from controller.radio.approval_gate import LOCAL_COMMUNE
from controller.radio.broadcasting import Broadcasting
from controller.radio.clip_library import Conflict, Invalid, NotFound
from controller.radio.scheduling import Scheduling
from controller.radio.targets import Clock, Target
from plumbing.clock import wall_ms

MAX_REASON = 500


def _user(actor: str) -> str:
    """The user behind an actor's name: "lan (token tich-hop)" is lan (usernames have no
    spaces), so nobody approves their own work through a token either."""
    return actor.split(" ", 1)[0]


@dataclass(frozen=True)
class ApprovalItem:
    id: int
    kind: str  # schedule | play | emergency
    state: str  # pending | approved | rejected | withdrawn | review | reviewed
    label: str
    targets: list[Target]
    schedule_id: int | None
    broadcast_id: str | None
    prepared_by: str
    prepared_ms: int
    decided_by: str | None
    decided_ms: int | None
    reason: str

    @classmethod
    def of(cls, row: ApprovalRow) -> ApprovalItem:
        return cls(
            row.id,
            row.kind,
            row.state,
            row.label,
            [Target(t["kind"], t["id"]) for t in row.targets],
            row.schedule_id,
            row.broadcast_id,
            row.prepared_by,
            row.prepared_ms,
            row.decided_by,
            row.decided_ms,
            row.reason,
        )


def _key(commune: str | None) -> str:
    return tenancy.setting_key(commune, LOCAL_COMMUNE)


def _already(state: str) -> Conflict:
    return Conflict(
        "already_decided",
        "Việc này không còn chờ duyệt (đã được duyệt, từ chối, sửa lại hoặc xem lại): "
        "tải lại trang để xem danh sách mới",
        "This item no longer waits (it was approved, rejected, changed or reviewed): "
        "reload the page for the current list",
    )


class ApprovalDesk:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        scheduling: Scheduling,
        broadcasting: Broadcasting,
        *,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.scheduling = scheduling
        self.broadcasting = broadcasting
        self.clock = clock

    def waiting(self, limit: int = 200, commune: str | None = None) -> list[ApprovalItem]:
        """What waits for a leader, oldest first: approvals, then emergencies to review
        (``commune``'s only; None: every commune's)."""
        with self.sessions() as session:
            query = (
                select(ApprovalRow)
                .where(ApprovalRow.state.in_(("pending", "review")))
                .order_by(ApprovalRow.prepared_ms, ApprovalRow.id)
                .limit(limit)
            )
            if commune is not None:
                query = query.where(ApprovalRow.commune == _key(commune))
            return [ApprovalItem.of(r) for r in session.scalars(query)]

    def decided(
        self, limit: int = 50, author: str | None = None, commune: str | None = None
    ) -> list[ApprovalItem]:
        """The latest decisions, newest first; ``author``'s own only, when given."""
        with self.sessions() as session:
            query = (
                select(ApprovalRow)
                .where(ApprovalRow.state.in_(("approved", "rejected", "reviewed")))
                .order_by(ApprovalRow.decided_ms.desc(), ApprovalRow.id.desc())
                .limit(limit)
            )
            if author is not None:
                query = query.where(ApprovalRow.prepared_by == author)
            if commune is not None:
                query = query.where(ApprovalRow.commune == _key(commune))
            return [ApprovalItem.of(r) for r in session.scalars(query)]

    def get(self, approval_id: int, commune: str | None = None) -> ApprovalItem:
        with self.sessions() as session:
            return ApprovalItem.of(self._row(session, approval_id, commune))

    def approve(self, approval_id: int, *, by: str, commune: str | None = None) -> ApprovalItem:
        """``commune``: the leader's; another commune's item is not found."""
        self.get(approval_id, commune)
        item = self._claim(approval_id, "pending", by=by)
        try:
            broadcast_id = self._release(approval_id, item)
        except Exception:
            self._unclaim(approval_id, "pending")
            raise
        return self._close(approval_id, "approved", by=by, broadcast_id=broadcast_id)

    def reject(
        self, approval_id: int, *, by: str, reason: str, commune: str | None = None
    ) -> ApprovalItem:
        self.get(approval_id, commune)
        cleaned = " ".join(reason.split())
        if not cleaned or len(cleaned) > MAX_REASON:
            raise Invalid(
                "no_reason",
                f"Hãy ghi lý do từ chối (từ 1 đến {MAX_REASON} ký tự) để người soạn biết "
                "cần sửa gì",
                f"Write why it is rejected (1 to {MAX_REASON} characters), so its author "
                "knows what to change",
            )
        item = self._claim(approval_id, "pending", by=by, own_ok=True)
        try:
            if item.kind == "schedule" and item.schedule_id is not None:
                self.scheduling.decide(
                    item.schedule_id, "rejected", expected_version=self._version(approval_id)
                )
        except Exception:
            self._unclaim(approval_id, "pending")
            raise
        return self._close(approval_id, "rejected", by=by, reason=cleaned)

    def mark_reviewed(
        self, approval_id: int, *, by: str, commune: str | None = None
    ) -> ApprovalItem:
        self.get(approval_id, commune)
        self._claim(approval_id, "review", by=by, own_ok=True)
        return self._close(approval_id, "reviewed", by=by)

    def _release(self, approval_id: int, item: ApprovalItem) -> str | None:
        """Put the approved item on air; the broadcast's id for a play."""
        if item.kind == "schedule":
            if item.schedule_id is None:  # its entry was deleted meanwhile
                raise _already("withdrawn")
            self.scheduling.decide(
                item.schedule_id, "approved", expected_version=self._version(approval_id)
            )
            return None
        with self.sessions() as session:
            request = dict(self._row(session, approval_id).request)
        return self.broadcasting.send_approved(request, by=item.prepared_by).id

    def _version(self, approval_id: int) -> int:
        with self.sessions() as session:
            return int(self._row(session, approval_id).request.get("version", 0))

    def _row(self, session: Session, approval_id: int, commune: str | None = None) -> ApprovalRow:
        row = session.get(ApprovalRow, approval_id)
        if row is None or (commune is not None and row.commune != _key(commune)):
            raise NotFound(
                "approval_not_found",
                f"Không có việc chờ duyệt số {approval_id}: có thể đã bị xoá; tải lại trang",
                f"No item {approval_id} waits for approval: it may have been removed; reload",
            )
        return row

    def _claim(
        self, approval_id: int, state: str, *, by: str, own_ok: bool = False
    ) -> ApprovalItem:
        """Take the item for one decision, or refuse: unknown, decided, or one's own work."""
        with self.sessions.begin() as session:
            row = self._row(session, approval_id)
            if row.state != state:
                raise _already(row.state)
            if not own_ok and _user(row.prepared_by) == _user(by):
                raise Conflict(
                    "own_work",
                    "Không thể tự duyệt việc do chính mình chuẩn bị: nhờ một lãnh đạo khác duyệt",
                    "You cannot approve what you prepared yourself: ask another leader",
                )
            claimed = session.execute(
                update(ApprovalRow)
                .where(ApprovalRow.id == approval_id, ApprovalRow.state == state)
                .values(state="deciding")
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise _already("deciding")
            return ApprovalItem.of(row)

    def _unclaim(self, approval_id: int, state: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(ApprovalRow)
                .where(ApprovalRow.id == approval_id, ApprovalRow.state == "deciding")
                .values(state=state)
            )

    def _close(
        self,
        approval_id: int,
        state: str,
        *,
        by: str,
        reason: str = "",
        broadcast_id: str | None = None,
    ) -> ApprovalItem:
        with self.sessions.begin() as session:
            row = self._row(session, approval_id)
            row.state, row.decided_by, row.decided_ms = state, by[:140], self.clock()
            row.reason = reason
            if broadcast_id is not None:
                row.broadcast_id = broadcast_id
            return ApprovalItem.of(row)
