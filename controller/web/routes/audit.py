"""The audit log: a page for people and `/api/audit` for programs.

The page says each action in words and each detail as text (Vietnamese as it
was typed, not JSON escapes); the codes stay in the API and in the filter.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from controller import i18n
from controller.auth.audit import audit_entries
from controller.auth.roles import Permission, Principal
from controller.db.auth_tables import AuditEntry
from controller.deps import DbSession, require
from controller.web.routes import ERRORS, lang_of, render

router = APIRouter()
Auditor = Annotated[Principal, Depends(require(Permission.VIEW_AUDIT))]
ACTION = r"^[a-z0-9_.:-]{0,64}$"
ACTOR = r"^[^\x00-\x1f\x7f]{0,140}$"
PAGE = 50
ACTIONS = {
    "broadcast.play": ("Phát ngay", "Play now"),
    "broadcast.emergency": ("Phát khẩn cấp", "Emergency broadcast"),
    "broadcast.stop": ("Dừng phát", "Stop a broadcast"),
    "broadcast.relay": ("Tiếp sóng ngay", "Relay a station now"),
    "broadcast.live": ("Bắt đầu phát trực tiếp", "Live voice started"),
    "broadcast.live_end": ("Kết thúc phát trực tiếp", "Live voice ended"),
    "bulletin.receive": ("Nhận bản tin từ cấp trên", "Bulletin received from above"),
    "bulletin.accept": ("Duyệt bản tin", "Bulletin accepted"),
    "bulletin.decline": ("Từ chối bản tin", "Bulletin declined"),
    "clip.upload": ("Tải lên tệp âm thanh", "Clip uploaded"),
    "clip.say": ("Tạo bản tin đọc tự động", "Text to speech"),
    "clip.delete": ("Xoá tệp âm thanh", "Clip deleted"),
    "config.set": ("Đổi cấu hình thiết bị", "Device configuration changed"),
    "device.add": ("Thêm thiết bị", "Device added"),
    "device.remove": ("Gỡ thiết bị", "Device removed"),
    "device.groups": ("Đổi nhóm của thiết bị", "Device groups changed"),
    "device.volume": ("Đổi âm lượng cụm loa", "Speaker volume changed"),
    "device.test_tone": ("Phát âm thử", "Test tone played"),
    "device.restart": ("Khởi động lại phần mềm thiết bị", "Device agent restarted"),
    "document.resend": ("Tự gửi lại lịch/cấu hình cho thiết bị", "Document resent to a device"),
    "key.stage": ("Chuẩn bị khoá ký mới", "New signing key staged"),
    "key.activate": ("Kích hoạt khoá ký mới", "New signing key activated"),
    "schedule.create": ("Thêm lịch phát", "Schedule entry added"),
    "schedule.update": ("Sửa lịch phát", "Schedule entry changed"),
    "schedule.delete": ("Xoá lịch phát", "Schedule entry deleted"),
    "schedule.publish": ("Gửi lịch phát tới cụm loa", "Schedule sent to the speakers"),
    "session.login": ("Đăng nhập", "Signed in"),
    "station.create": ("Thêm đài tiếp sóng", "Station added"),
    "station.update": ("Sửa đài tiếp sóng", "Station changed"),
    "station.delete": ("Xoá đài tiếp sóng", "Station deleted"),
    "session.logout": ("Đăng xuất", "Signed out"),
    "token.create": ("Tạo mã truy cập API", "API token created"),
    "token.revoke": ("Thu hồi mã truy cập API", "API token revoked"),
    "user.create": ("Thêm người dùng", "User added"),
    "user.update": ("Sửa người dùng", "User changed"),
    "webhook.retry": ("Gửi lại webhook", "Webhook sent again"),
}
i18n.register({f"audit.action.{code}": pair for code, pair in ACTIONS.items()})


def action_text(lang: i18n.Lang, code: str) -> str:
    """The action in words; one this page does not know yet, as its code."""
    key = f"audit.action.{code}"
    return i18n.t(lang, key) if i18n.has(key) else code


def details_text(details: dict[str, Any]) -> str:
    """``key: value`` pairs, text as typed (a value that is not text, as JSON)."""
    return "; ".join(
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in details.items()
    )


class AuditOut(BaseModel):
    id: int
    at_ms: int
    actor_kind: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    ip: str
    commune: str | None = None  # the actor's (None: the province, or the system)

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
            commune=e.commune,
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
    `action` and `actor` match the start (`user.` gives every user change). A commune
    admin reads the entries of their commune's users only; the province, every entry."""
    entries = audit_entries(db, limit=limit, before_id=before_id, action=action, actor=actor,
                            commune=who.commune)  # fmt: skip
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
    entries = audit_entries(db, limit=PAGE, before_id=before_id, action=action, actor=actor,
                            commune=who.commune)  # fmt: skip
    lang = lang_of(request)
    return render(
        request,
        "audit.html",
        entries=entries,
        action_text=lambda code: action_text(lang, code),
        details_text=details_text,
        action=action,
        actor=actor,
        older=entries[-1].id if len(entries) == PAGE else None,
    )
