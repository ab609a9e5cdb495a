"""Alerts: the open ones and the recently cleared, for people and programs; acknowledging.

The alert engine (controller/fleet/alerts.py, run by controller/fleet/service.py)
raises and clears; people only acknowledge: "I have seen it, I am on it".
An acknowledgement is an audit entry (`alert.acknowledge`, `alert:<id>`),
so who saw what and when is kept with every other change, and the alerts
table stays the engine's alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import i18n
from controller.auth import tenancy
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.db.auth_tables import AuditEntry
from controller.db.fleet_tables import Alert, Device
from controller.deps import DbSession, app_state, require
from controller.fleet.alert_rules import KINDS
from controller.fleet.queries import in_commune
from controller.web.routes import ERRORS, error_responses, render
from controller.web.routes.webhook_deliveries import undelivered_count
from protocol.topics import ID_PATTERN

router = APIRouter()
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
ACK = "alert.acknowledge"
RECENT_DAYS = 7
AlertId = Annotated[int, Path(ge=1, le=2**53)]

i18n.register(
    {
        "alerts.title": ("Cảnh báo", "Alerts"),
        "alerts.open": ("Đang mở", "Open"),
        "alerts.recent": ("Đã hết trong {days} ngày qua", "Cleared in the last {days} days"),
        "alerts.none": ("Không có cảnh báo nào.", "No alerts."),
        "alerts.cleared_at": ("Hết lúc {when}", "Cleared at {when}"),
        "alerts.raised": ("Bắt đầu", "Raised"),
        "alerts.device": ("Thiết bị", "Device"),
        "alerts.message": ("Nội dung", "Message"),
        "alerts.ack": ("Đã biết", "Acknowledge"),
        "alerts.acked_by": ("{who} đã biết lúc {when}", "Acknowledged by {who} at {when}"),
        "alerts.no_alert": ("Không có cảnh báo số {id}.", "No alert {id}."),
        "alerts.severity.critical": ("Nghiêm trọng", "Critical"),
        "alerts.severity.warning": ("Cần chú ý", "Warning"),
        "alert.device.offline": ("Mất kết nối", "Offline"),
        "alert.temp.high": ("Nhiệt độ cao", "Temperature high"),
        "alert.disk.low": ("Sắp đầy bộ nhớ", "Disk low"),
        "alert.clock.unsynced": ("Đồng hồ chưa đồng bộ", "Clock not synced"),
        "alert.printer.paper_out": ("Máy in hết giấy", "Printer out of paper"),
        "alert.printer.cover_open": ("Máy in mở nắp", "Printer cover open"),
        "alert.printer.offline": ("Máy in không trả lời", "Printer not answering"),
        "alert.printer.paper_low": ("Máy in sắp hết giấy", "Printer paper low"),
        "alert.printer.unprintable": ("Vé không in được", "Ticket not printed"),
        "alert.play.missed": ("Lượt phát bị bỏ lỡ", "Play missed"),
        "alert.play.failed": ("Lượt phát lỗi", "Play failed"),
        "alert.stream.dead_air": ("Tiếp sóng mất tiếng", "Relay dead air"),
        "alert.stream.unreachable": ("Không kết nối được đài", "Station unreachable"),
        "alert.identity.duplicate": ("Hai máy chung danh tính", "Duplicate identity"),
    }
)


class Acknowledgement(BaseModel):
    by: str
    at_ms: int


class AlertOut(BaseModel):
    id: int
    kind: str
    device_id: str
    severity: str
    raised_ms: int
    cleared_ms: int | None
    message_vi: str
    message_en: str
    details: dict[str, Any]
    acknowledged: Acknowledgement | None


def _acks(db: Session, alerts: list[Alert]) -> dict[int, Acknowledgement]:
    """The first acknowledgement of each alert: one query for the whole list."""
    if not alerts:
        return {}
    targets = [f"alert:{a.id}" for a in alerts]
    rows = db.execute(
        select(AuditEntry.target, AuditEntry.actor_name, AuditEntry.at_ms)
        .where(AuditEntry.action == ACK, AuditEntry.target.in_(targets))
        .order_by(AuditEntry.id.desc())
    )
    return {int(t.split(":")[1]): Acknowledgement(by=n, at_ms=at) for t, n, at in rows}


def _listed(
    db: Session,
    now_ms: int,
    *,
    status: str,
    device: str,
    kind: str,
    limit: int,
    commune: str | None = None,
) -> list[AlertOut]:
    """The alerts asked for, of ``commune``'s devices only (None: every one)."""
    stmt = select(Alert)
    if commune is not None:
        stmt = stmt.where(Alert.device_id.in_(in_commune(commune)))
    if status == "open":
        stmt = stmt.where(Alert.cleared_ms.is_(None))
    elif status == "cleared":
        stmt = stmt.where(Alert.cleared_ms >= now_ms - RECENT_DAYS * 86_400_000)
    else:
        stmt = stmt.where(
            (Alert.cleared_ms.is_(None)) | (Alert.cleared_ms >= now_ms - RECENT_DAYS * 86_400_000)
        )
    if device:
        stmt = stmt.where(Alert.device_id == device)
    if kind:
        stmt = stmt.where(Alert.kind == kind)
    alerts = list(db.scalars(stmt.order_by(Alert.raised_ms.desc(), Alert.id.desc()).limit(limit)))
    acks = _acks(db, alerts)
    return [_out(a, acks.get(a.id)) for a in alerts]


def _out(a: Alert, ack: Acknowledgement | None) -> AlertOut:
    return AlertOut(
        id=a.id,
        kind=a.kind,
        device_id=a.device_id,
        severity=a.severity,
        raised_ms=a.raised_ms,
        cleared_ms=a.cleared_ms,
        message_vi=a.message_vi,
        message_en=a.message_en,
        details=a.details or {},
        acknowledged=ack,
    )


Status = Literal["open", "cleared", "all"]
DeviceFilter = Annotated[str, Query(pattern=f"^({ID_PATTERN})?$", max_length=48)]
KindFilter = Annotated[str, Query(pattern=f"^({'|'.join(k.replace('.', '[.]') for k in KINDS)})?$")]


@router.get("/api/alerts", response_model=list[AlertOut], tags=["alerts"], responses=ERRORS)
def api_alerts(
    *,
    request: Request,
    db: DbSession,
    who: Viewer,
    status: Status = "all",
    device: DeviceFilter = "",
    kind: KindFilter = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AlertOut]:
    """Newest first: open alerts, and those cleared in the last 7 days; both languages."""
    now = app_state(request).now_ms()
    return _listed(
        db, now, status=status, device=device, kind=kind, limit=limit, commune=who.commune
    )


@router.post(
    "/api/alerts/{alert_id}/acknowledge",
    response_model=AlertOut,
    tags=["alerts"],
    responses=error_responses(401, 403, 404, 422),
)
def api_acknowledge(request: Request, db: DbSession, who: Viewer, alert_id: AlertId) -> AlertOut:
    """Record that the caller has seen this alert (in the audit log); it stays open until
    its cause is gone."""
    return _acknowledge(request, db, who, alert_id)


def _within(db: Session, who: Principal, alert: Alert) -> bool:
    """Whether the alert's device is in the principal's commune (an alert of no device
    is the province's)."""
    if who.commune is None:
        return True
    device = db.get(Device, alert.device_id) if alert.device_id else None
    return tenancy.sees(who.commune, device.commune if device else None)


def _acknowledge(request: Request, db: Session, who: Principal, alert_id: int) -> AlertOut:
    alert = db.get(Alert, alert_id)
    if alert is None or not _within(db, who, alert):
        raise i18n.Refusal(404, "alerts.no_alert", id=alert_id)
    audit(
        db,
        who,
        ACK,
        f"alert:{alert.id}",
        {"kind": alert.kind, "device": alert.device_id},
        at_ms=app_state(request).now_ms(),
    )
    db.commit()
    return _out(alert, _acks(db, [alert]).get(alert.id))


@router.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
def alerts_page(
    *, request: Request, db: DbSession, who: Viewer, device: DeviceFilter = ""
) -> Response:
    now = app_state(request).now_ms()
    listed = _listed(db, now, status="all", device=device, kind="", limit=500, commune=who.commune)
    undelivered = undelivered_count(db, who.commune) if who.can(Permission.MANAGE_DEVICES) else 0
    return render(
        request,
        "alerts.html",
        open_alerts=[a for a in listed if a.cleared_ms is None],
        cleared=[a for a in listed if a.cleared_ms is not None],
        days=RECENT_DAYS,
        device=device,
        undelivered=undelivered,
    )


@router.post("/alerts/{alert_id}/acknowledge", include_in_schema=False)
def acknowledge_form(request: Request, db: DbSession, who: Viewer, alert_id: AlertId) -> Response:
    _acknowledge(request, db, who, alert_id)
    return RedirectResponse("/alerts", status_code=303)
