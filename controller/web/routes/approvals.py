"""Approval before air: the "Chờ duyệt" page, the commune's setting, and the JSON API.

The gate and the desk are controller.radio's (approval_gate, approvals); this
module asks for permissions, says each item in words, and audits each step:
``approval.prepare`` when something is held back, ``approval.approve`` or
``approval.reject`` (with the reason), ``approval.review`` for an emergency.
Everyone who sees the fleet sees what waits; only leaders and admins decide;
the setting is the administrator's.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from controller import i18n
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.deps import (
    Communes,
    DbSession,
    StationDep,
    asked_commune,
    commune_names,
    require,
)
from controller.radio.approvals import ApprovalItem
from controller.radio.broadcasting import Held
from controller.radio.station import Station, refused_as_http
from controller.web.routes import LOCAL_TZ, error_responses, render

router = APIRouter(tags=["approvals"])
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
Approver = Annotated[Principal, Depends(require(Permission.APPROVE))]
Admin = Annotated[Principal, Depends(require(Permission.MANAGE_USERS))]
ApprovalId = Annotated[int, Path(ge=1, le=2**31 - 1)]
DECIDE_ERRORS = error_responses(401, 403, 404, 409, 422, 503)

i18n.register(
    {
        "appr.other_commune": (
            "Bạn chỉ đặt chế độ duyệt cho xã mình: bỏ chọn xã khác.",
            "You set approval for your own commune only: do not name another commune.",
        ),
        "appr.per_commune": ("Chế độ duyệt của từng xã", "Approval, commune by commune"),
        "appr.commune_on": ("Đang bật", "On"),
        "appr.commune_off": ("Đang tắt", "Off"),
        "nav.approvals": ("Chờ duyệt", "Approvals"),
        "appr.title": ("Chờ duyệt", "Waiting for approval"),
        "appr.intro.on": (
            "Xã đang bật duyệt trước khi phát: lịch phát và lệnh phát do phát thanh viên "
            "chuẩn bị chỉ tới cụm loa sau khi lãnh đạo duyệt. Bản tin khẩn cấp vẫn phát "
            "ngay và được đánh dấu cần xem lại.",
            "Approval before air is on: schedule entries and broadcasts a broadcaster "
            "prepares reach the speakers only once a leader approves them. Emergencies "
            "still go out at once and are flagged for review.",
        ),
        "appr.intro.off": (
            "Xã chưa bật duyệt trước khi phát: mọi lịch phát và lệnh phát tới cụm loa ngay.",
            "Approval before air is off: every entry and broadcast reaches the speakers at once.",
        ),
        "appr.setting": ("Duyệt trước khi phát", "Approval before air"),
        "appr.turn_on": ("Bật duyệt trước khi phát", "Turn approval on"),
        "appr.turn_off": ("Tắt duyệt trước khi phát", "Turn approval off"),
        "appr.setting_saved": ("Đã lưu cài đặt duyệt.", "Approval setting saved."),
        "appr.waiting": ("Việc chờ lãnh đạo duyệt", "Waiting for a leader"),
        "appr.none": ("Không có việc nào chờ duyệt.", "Nothing waits for approval."),
        "appr.review": ("Bản tin khẩn cấp cần xem lại", "Emergencies to review"),
        "appr.none_review": (
            "Không có bản tin khẩn cấp nào cần xem lại.",
            "No emergency to review.",
        ),
        "appr.kind.schedule": ("Lịch phát", "Schedule entry"),
        "appr.kind.play": ("Phát ngay", "Play now"),
        "appr.kind.emergency": ("Phát khẩn cấp", "Emergency broadcast"),
        "appr.what": ("Nội dung", "What"),
        "appr.by": ("Người chuẩn bị", "Prepared by"),
        "appr.at": ("Lúc", "At"),
        "appr.approve": ("Duyệt, cho phát", "Approve"),
        "appr.reject": ("Từ chối", "Reject"),
        "appr.reason": ("Lý do từ chối", "Why it is rejected"),
        "appr.mark_reviewed": ("Đã xem lại", "Mark reviewed"),
        "appr.approved": (
            "Đã duyệt: nội dung đã được gửi tới cụm loa.",
            "Approved: sent to the speakers.",
        ),
        "appr.rejected": ("Đã từ chối và ghi lý do.", "Rejected, with the reason."),
        "appr.reviewed": ("Đã đánh dấu xem lại.", "Marked reviewed."),
        "appr.decided": ("Quyết định gần đây", "Recent decisions"),
        "appr.mine": ("Quyết định về việc của bạn", "Decisions on your work"),
        "appr.state.approved": ("Đã duyệt", "Approved"),
        "appr.state.rejected": ("Bị từ chối", "Rejected"),
        "appr.state.reviewed": ("Đã xem lại", "Reviewed"),
        "appr.decided_by": ("Người quyết định", "Decided by"),
        "appr.entry.pending": ("Chờ duyệt", "Waiting for approval"),
        "appr.entry.rejected": (
            "Bị từ chối: xem lý do ở trang Chờ duyệt",
            "Rejected: see why on the Approvals page",
        ),
        "appr.held": (
            "Đã lưu, đang chờ lãnh đạo duyệt: chưa gửi tới cụm loa nào.",
            "Saved; waiting for a leader's approval: nothing was sent to the speakers.",
        ),
        "appr.bad_setting": (
            "Chọn bật hoặc tắt duyệt trước khi phát.",
            "Choose whether approval before air is on or off.",
        ),
        "appr.no_reason": (
            "Hãy ghi lý do từ chối để người soạn biết cần sửa gì.",
            "Write why it is rejected, so its author knows what to change.",
        ),
        "audit.action.approval.prepare": (
            "Chuẩn bị, chờ lãnh đạo duyệt",
            "Prepared, waiting for approval",
        ),
        "audit.action.approval.approve": ("Lãnh đạo duyệt cho phát", "Approved by a leader"),
        "audit.action.approval.reject": ("Lãnh đạo từ chối", "Rejected by a leader"),
        "audit.action.approval.review": ("Xem lại bản tin khẩn cấp", "Emergency reviewed"),
        "audit.action.approval.setting": (
            "Đổi cài đặt duyệt trước khi phát",
            "Approval setting changed",
        ),
    }
)


class TargetOut(BaseModel):
    kind: str
    id: str


class ApprovalOut(BaseModel):
    id: int
    kind: Literal["schedule", "play", "emergency"]
    state: str = Field(description="pending, approved, rejected, withdrawn, review, reviewed")
    label: str
    targets: list[TargetOut]
    schedule_id: int | None
    broadcast_id: str | None
    prepared_by: str
    prepared_ms: int
    decided_by: str | None
    decided_ms: int | None
    reason: str

    @classmethod
    def of(cls, item: ApprovalItem) -> ApprovalOut:
        fields = {k: v for k, v in vars(item).items() if k != "targets"}
        return cls(**fields, targets=[TargetOut(kind=t.kind, id=t.id) for t in item.targets])


class HeldOut(BaseModel):
    """A play-now that waits for a leader's approval: nothing was sent yet."""

    approval_id: int
    state: Literal["pending"] = "pending"
    label: str


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(max_length=500)]


class ApprovalSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_required: Annotated[bool, Field(strict=True)]  # true or false, not 0 or "yes"


def audit_held(db: DbSession, who: Principal, kind: str, ident: str, label: str) -> None:
    """The first step in the log: prepared, and held back for a leader."""
    audit(db, who, "approval.prepare", f"{kind}:{ident}", {"label": label, "state": "pending"})
    db.commit()


def held_out(db: DbSession, who: Principal, held: Held) -> HeldOut:
    audit_held(db, who, "approval", str(held.approval_id), held.label)
    return HeldOut(approval_id=held.approval_id, label=held.label)


def _audit_decision(db: DbSession, who: Principal, action: str, item: ApprovalItem) -> None:
    details: dict[str, Any] = {"label": item.label, "prepared_by": item.prepared_by}
    details["prepared_at"] = at_minute(item.prepared_ms)  # as the page says it
    if item.reason:
        details["reason"] = item.reason
    if item.broadcast_id:
        details["broadcast"] = item.broadcast_id
    target = f"schedule:{item.schedule_id}" if item.schedule_id else f"approval:{item.id}"
    audit(db, who, action, target, details)
    db.commit()


def approve(station: Station, db: DbSession, who: Principal, approval_id: int) -> ApprovalItem:
    with refused_as_http():
        item = station.approvals.get(approval_id, who.commune)
    if item.state == "pending":  # a decided one is refused as such, broker or not
        station.check_can_send()
    with refused_as_http():
        done = station.approvals.approve(approval_id, by=who.name, commune=who.commune)
    _audit_decision(db, who, "approval.approve", done)
    return done


def reject(
    station: Station, db: DbSession, who: Principal, approval_id: int, reason: str
) -> ApprovalItem:
    with refused_as_http():
        done = station.approvals.reject(
            approval_id, by=who.name, reason=reason, commune=who.commune
        )
    _audit_decision(db, who, "approval.reject", done)
    return done


def review(station: Station, db: DbSession, who: Principal, approval_id: int) -> ApprovalItem:
    with refused_as_http():
        done = station.approvals.mark_reviewed(approval_id, by=who.name, commune=who.commune)
    _audit_decision(db, who, "approval.review", done)
    return done


def setting_commune(who: Principal, communes: Communes, asked: str | None) -> str | None:
    """The commune whose approval setting a request reads or sets."""
    return asked_commune(who, communes, asked, "appr.other_commune")


def set_setting(
    station: Station, db: DbSession, who: Principal, on: bool, commune: str | None = None
) -> None:
    if station.gate.set_required(db, on, by=who.name, commune=commune):
        where = f"commune:{commune}" if commune else "commune:approval_required"
        audit(db, who, "approval.setting", where, {"on": on})
    db.commit()


@router.get("/api/approvals", response_model=list[ApprovalOut], responses=DECIDE_ERRORS)
def api_waiting(station: StationDep, who: Viewer) -> list[ApprovalOut]:
    """What waits for a leader (`pending`) and emergencies to review (`review`), oldest first
    (a commune user: their commune's)."""
    return [ApprovalOut.of(i) for i in station.approvals.waiting(commune=who.commune)]


@router.post(
    "/api/approvals/{approval_id}/approve", response_model=ApprovalOut, responses=DECIDE_ERRORS
)
def api_approve(
    approval_id: ApprovalId, station: StationDep, db: DbSession, who: Approver
) -> ApprovalOut:
    """Approve what waits: an entry joins its target's schedule, a play-now is sent now."""
    return ApprovalOut.of(approve(station, db, who, approval_id))


@router.post(
    "/api/approvals/{approval_id}/reject", response_model=ApprovalOut, responses=DECIDE_ERRORS
)
def api_reject(
    approval_id: ApprovalId, body: RejectIn, station: StationDep, db: DbSession, who: Approver
) -> ApprovalOut:
    """Reject what waits, saying why: its author reads the reason."""
    return ApprovalOut.of(reject(station, db, who, approval_id, body.reason))


@router.post(
    "/api/approvals/{approval_id}/reviewed", response_model=ApprovalOut, responses=DECIDE_ERRORS
)
def api_reviewed(
    approval_id: ApprovalId, station: StationDep, db: DbSession, who: Approver
) -> ApprovalOut:
    """Mark an emergency that aired without approval as reviewed."""
    return ApprovalOut.of(review(station, db, who, approval_id))


CommuneQuery = Annotated[str, Query(max_length=48, pattern=r"^[a-z0-9-]*$")]


@router.get("/api/settings/approval", response_model=ApprovalSetting, responses=DECIDE_ERRORS)
def api_get_setting(
    station: StationDep, db: DbSession, who: Viewer, communes: Communes, commune: CommuneQuery = ""
) -> ApprovalSetting:
    """The approval setting of the caller's commune (the province: its own, or the
    commune named by `commune`)."""
    where = setting_commune(who, communes, commune)
    return ApprovalSetting(approval_required=station.gate.required(db, commune=where))


@router.put("/api/settings/approval", response_model=ApprovalSetting, responses=DECIDE_ERRORS)
def api_put_setting(
    *,
    body: ApprovalSetting,
    station: StationDep,
    db: DbSession,
    who: Admin,
    communes: Communes,
    commune: CommuneQuery = "",
) -> ApprovalSetting:
    """Turn approval before air on or off for the commune (off by default): a commune
    admin for their own, the province for its own or, with `commune`, for that one."""
    where = setting_commune(who, communes, commune)
    set_setting(station, db, who, body.approval_required, where)
    return ApprovalSetting(approval_required=station.gate.required(db, commune=where))


# pages


def at_minute(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, LOCAL_TZ).strftime("%d/%m/%Y %H:%M")


def _page(
    request: Request,
    station: Station,
    db: DbSession,
    who: Principal,
    *,
    status_code: int = 200,
    error: i18n.Refusal | None = None,
    done: str = "",
) -> HTMLResponse:
    waiting = station.approvals.waiting(commune=who.commune)
    mine = station.approvals.decided(author=who.name)
    names = commune_names(request)
    return render(
        request,
        "approvals.html",
        status_code=status_code,
        error=error,
        done=done,
        required=station.gate.required(db, commune=who.commune),
        # the province sets each commune's; a commune only its own (above)
        commune_settings=[
            (c, name, station.gate.required(db, commune=c)) for c, name in sorted(names.items())
        ]
        if who.commune is None
        else [],
        pending=[i for i in waiting if i.state == "pending"],
        review=[i for i in waiting if i.state == "review"],
        decided=station.approvals.decided(commune=who.commune)
        if who.can(Permission.APPROVE)
        else [],
        mine=mine,
        at_minute=at_minute,
    )


@router.get("/approvals", response_class=HTMLResponse, include_in_schema=False)
def approvals_page(request: Request, station: StationDep, db: DbSession, who: Viewer) -> Response:
    done = request.query_params.get("done", "")
    return _page(request, station, db, who, done=done if done in DONE else "")


DONE = ("approved", "rejected", "reviewed", "setting_saved")


def _after(
    request: Request, station: Station, db: DbSession, who: Principal, *, done: str, action: Any
) -> Response:
    try:
        action()
    except i18n.Refusal as refused:
        db.rollback()
        return _page(request, station, db, who, status_code=refused.status, error=refused)
    return RedirectResponse(f"/approvals?done={done}", status_code=303)


@router.post("/approvals/{approval_id}/approve", include_in_schema=False)
def page_approve(
    request: Request, approval_id: ApprovalId, station: StationDep, db: DbSession, who: Approver
) -> Response:
    return _after(
        request, station, db, who, done="approved",
        action=lambda: approve(station, db, who, approval_id),
    )  # fmt: skip


@router.post("/approvals/{approval_id}/reject", include_in_schema=False)
def page_reject(
    *,
    request: Request,
    approval_id: ApprovalId,
    station: StationDep,
    db: DbSession,
    who: Approver,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    return _after(
        request, station, db, who, done="rejected",
        action=lambda: reject(station, db, who, approval_id, reason),
    )  # fmt: skip


@router.post("/approvals/{approval_id}/reviewed", include_in_schema=False)
def page_reviewed(
    request: Request, approval_id: ApprovalId, station: StationDep, db: DbSession, who: Approver
) -> Response:
    return _after(
        request, station, db, who, done="reviewed",
        action=lambda: review(station, db, who, approval_id),
    )  # fmt: skip


@router.post("/approvals/setting", include_in_schema=False)
def page_setting(
    *,
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Admin,
    communes: Communes,
    approval_required: Annotated[str, Form()] = "",
    commune: Annotated[str, Form(max_length=48)] = "",
) -> Response:
    if approval_required not in ("on", "off"):
        refused = i18n.Refusal(422, "appr.bad_setting")
        return _page(request, station, db, who, status_code=422, error=refused)

    def save() -> None:
        where = setting_commune(who, communes, commune)
        set_setting(station, db, who, approval_required == "on", where)

    return _after(request, station, db, who, done="setting_saved", action=save)
