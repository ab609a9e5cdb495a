"""Webhooks that did not get through: what a technician sees and sends again.

The sender (controller/fleet/webhooks.py) retries with backoff and gives up
after its attempts; until now a given-up delivery was only a log line. This
page lists what is still retrying and what was given up, says why in words,
and sends a given-up one again (audited as `webhook.retry`) once the
receiver is fixed. A commune's technician sees and sends again only what is
owed to their commune's webhook (controller/auth/tenancy.py); the province's,
everything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from controller import i18n
from controller.auth import tenancy
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, app_state, require
from controller.fleet import webhooks
from controller.web.routes import ERRORS, error_responses, render

router = APIRouter()
Technician = Annotated[Principal, Depends(require(Permission.MANAGE_DEVICES))]
DeliveryId = Annotated[int, Path(ge=1, le=2**53)]
RETRY = "webhook.retry"

i18n.register(
    {
        "webhooks.title": ("Webhook chưa gửi được", "Webhooks not delivered"),
        "webhooks.none": (
            "Mọi webhook đã gửi tới máy nhận.",
            "Every webhook reached its receiver.",
        ),
        "webhooks.alert": ("Cảnh báo", "Alert"),
        "webhooks.action.raised": ("Bắt đầu", "Raised"),
        "webhooks.action.cleared": ("Đã hết", "Cleared"),
        "webhooks.created": ("Lúc", "At"),
        "webhooks.attempts": ("Số lần thử", "Attempts"),
        "webhooks.why": ("Lý do", "Why"),
        "webhooks.retrying": ("Đang thử lại, lần tới lúc {when}", "Retrying, next at {when}"),
        "webhooks.failed": ("Đã ngừng thử", "Given up"),
        "webhooks.retry": ("Gửi lại", "Send again"),
        "webhooks.retry_confirm": (
            "Gửi lại webhook này tới máy nhận?",
            "Send this webhook to the receiver again?",
        ),
        "webhooks.link": ("{n} webhook chưa gửi được", "{n} webhooks not delivered"),
        "webhooks.not_found": (
            "Không có webhook số {id}.",
            "No webhook {id}.",
        ),
        "webhooks.not_failed": (
            "Webhook số {id} không ở trạng thái đã ngừng thử: không cần gửi lại.",
            "Webhook {id} has not been given up: there is nothing to send again.",
        ),
    }
)


class UndeliveredOut(BaseModel):
    id: int
    alert_id: int
    action: str
    alert_kind: str
    device_id: str
    commune: str | None = Field(description="Whose webhook it is owed to (none: the province's)")
    status: str
    attempts: int
    created_ms: int
    next_attempt_ms: int | None
    reason_vi: str
    reason_en: str


def _listed(db: Session, commune: str | None) -> list[UndeliveredOut]:
    out = []
    for u in webhooks.undelivered(db, commune=commune):
        vi, en = webhooks.error_words(u.last_error)
        out.append(
            UndeliveredOut(
                id=u.id,
                alert_id=u.alert_id,
                action=u.action,
                alert_kind=u.alert_kind,
                device_id=u.device_id,
                commune=u.commune,
                status=u.status,
                attempts=u.attempts,
                created_ms=u.created_ms,
                next_attempt_ms=u.due_ms if u.status == "pending" else None,
                reason_vi=vi,
                reason_en=en,
            )
        )
    return out


def undelivered_count(db: Session, commune: str | None) -> int:
    """For the alerts page's link: what ``commune``'s technician sees."""
    return len(webhooks.undelivered(db, commune=commune))


@router.get(
    "/api/webhooks/undelivered",
    response_model=list[UndeliveredOut],
    tags=["alerts"],
    responses=ERRORS,
)
def api_undelivered(db: DbSession, who: Technician) -> list[UndeliveredOut]:
    """Deliveries still retrying after a failure, and those given up; newest first. A
    commune user's: those owed to their commune's webhook."""
    return _listed(db, who.commune)


@router.post(
    "/api/webhooks/{delivery_id}/retry",
    response_model=list[UndeliveredOut],
    tags=["alerts"],
    responses=error_responses(401, 403, 404, 409, 422),
)
def api_retry(
    request: Request, db: DbSession, who: Technician, delivery_id: DeliveryId
) -> list[UndeliveredOut]:
    """Send a given-up delivery again, from its first attempt; answers what is still owed."""
    _retry(request, db, who, delivery_id)
    return _listed(db, who.commune)


def _retry(request: Request, db: Session, who: Principal, delivery_id: int) -> None:
    state = app_state(request)
    now = state.now_ms()
    found, commune = webhooks.owed_to(db, delivery_id)
    if not found or not tenancy.sees(who.commune, commune):
        raise i18n.Refusal(404, "webhooks.not_found", id=delivery_id)
    if not webhooks.retry(db, delivery_id, now):
        db.rollback()
        raise i18n.Refusal(409, "webhooks.not_failed", id=delivery_id)
    audit(db, who, RETRY, f"webhook:{delivery_id}", {}, at_ms=now)
    db.commit()
    sender = state.fleet.webhooks if state.fleet is not None else None
    if sender is not None:
        sender.wake()


@router.get("/alerts/webhooks", response_class=HTMLResponse, include_in_schema=False)
def undelivered_page(request: Request, db: DbSession, who: Technician) -> Response:
    return render(request, "webhooks.html", deliveries=_listed(db, who.commune))


@router.post("/alerts/webhooks/{delivery_id}/retry", include_in_schema=False)
def retry_form(
    request: Request, db: DbSession, who: Technician, delivery_id: DeliveryId
) -> Response:
    _retry(request, db, who, delivery_id)
    return RedirectResponse("/alerts/webhooks", status_code=303)
