"""Play now, emergency and stop over HTTP, and the page with its confirmation step.

Every send is audited in the same transaction as nothing else: the command is
recorded by controller.radio.broadcasting, the audit row here, and both name the
broadcast id. An emergency needs an explicit confirmation: `"confirm": true`
in the API, a second page in the browser.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from controller import i18n
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, StationDep, require
from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.broadcasting import BROADCAST_KINDS, Held
from controller.radio.station import Station, refused_as_http
from controller.radio.targets import Target
from controller.web.routes import error_responses, render
from controller.web.routes.approvals import HeldOut, held_out
from controller.web.routes.broadcast_schemas import (
    BroadcastOut,
    BroadcastSentOut,
    EmergencyIn,
    PlayIn,
    StopIn,
)
from controller.web.routes.targets import target_choices

router = APIRouter(tags=["broadcasts"])
Broadcaster = Annotated[Principal, Depends(require(Permission.BROADCAST))]
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
SEND_ERRORS = error_responses(401, 403, 404, 422, 503)
BroadcastId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]

i18n.register(
    {
        "nav.broadcasts": ("Phát thanh", "Broadcasts"),
        "bc.title": ("Phát thanh", "Broadcasts"),
        "bc.play": ("Phát ngay", "Play now"),
        "bc.emergency": ("Phát khẩn cấp", "Emergency broadcast"),
        "bc.emergency_intro": (
            "Bản tin khẩn cấp phát ngay lập tức trên mọi cụm loa được chọn, ngắt mọi nội dung "
            "đang phát và bỏ qua giờ yên tĩnh.",
            "An emergency broadcast plays at once on every chosen speaker, interrupting "
            "whatever plays and ignoring quiet hours.",
        ),
        "bc.confirm_title": ("Xác nhận phát khẩn cấp", "Confirm the emergency broadcast"),
        "bc.confirm_text": (
            "Bạn sắp phát khẩn cấp «{clip}» tới {count} cụm loa: {devices}.",
            "You are about to broadcast «{clip}» as an emergency to {count} speakers: {devices}.",
        ),
        "bc.confirm_send": ("Xác nhận, phát khẩn cấp ngay", "Confirm: broadcast now"),
        "bc.cancel": ("Huỷ", "Cancel"),
        "bc.stop": ("Dừng phát", "Stop"),
        "bc.sent": ("Đã gửi lệnh {id}.", "Command {id} sent."),
        "bc.recent": ("Lệnh phát gần đây", "Recent broadcasts"),
        "bc.empty": ("Chưa có lệnh phát nào.", "No broadcasts yet."),
        "bc.targets": ("Nơi phát", "Where"),
        "bc.clip": ("Tệp âm thanh", "Clip"),
        "bc.level": ("Mức", "Level"),
        "bc.label": ("Tiêu đề", "Label"),
        "bc.kind": ("Loại", "Kind"),
        "bc.kind.play": ("Phát bản tin", "Clip"),
        "bc.kind.stream": ("Tiếp sóng", "Relay"),
        "bc.kind.stop": ("Dừng phát", "Stop"),
        "bc.acks": ("Xác nhận của cụm loa", "Speaker answers"),
        "bc.no_broker": ("Chưa kết nối máy chủ MQTT", "No MQTT connection"),
        "bc.no_target": ("Chọn ít nhất một nơi phát.", "Choose at least one target."),
        "bc.no_clip": ("Chọn một tệp âm thanh.", "Choose a clip."),
        "level.normal": ("Thông thường", "Normal"),
        "level.priority": ("Ưu tiên", "Priority"),
        "level.emergency": ("Khẩn cấp", "Emergency"),
        "target.group": ("Nhóm {id}", "Group {id}"),
        "target.all": ("Toàn xã (mọi cụm loa)", "The whole commune (every speaker)"),
        "target.province": ("Toàn tỉnh (mọi xã)", "The whole province (every commune)"),
        "target.commune": ("Toàn xã: {name}", "The whole commune: {name}"),
        "target.device": ("Cụm loa {id}", "Speaker {id}"),
        "status.sent": ("Đã gửi", "Sent"),
        "status.acked": ("Đã nhận đủ", "All answered"),
        "status.partial": ("Một phần", "Partly refused"),
        "status.refused": ("Bị từ chối", "Refused"),
    }
)


def audit_sent(db: DbSession, who: Principal, action: str, info: BroadcastInfo) -> None:
    target = ",".join(f"{t.kind}:{t.id}" for t in info.targets)
    details: dict[str, Any] = {"broadcast": info.id, "level": info.level, "label": info.label}
    details |= {"clip": info.clip_sha256, "devices": [a.device for a in info.acks]}
    audit(db, who, action, target, details)
    db.commit()


def precheck(
    station: Station, targets: list[Target], clip: str | None = None, commune: str | None = None
) -> None:
    """Bad input is told as such (4xx) before a missing broker (503); so is a target
    outside the caller's commune (403)."""
    station.check_site()
    with refused_as_http():
        for target in targets:
            station.scheduling.fleet.members_within(target, commune)
        if clip is not None:
            station.library.get(clip, commune)
    station.check_can_send()


def play(station: Station, db: DbSession, who: Principal, body: PlayIn) -> BroadcastInfo | HeldOut:
    """Sent, or held back for a leader's approval (and audited as prepared)."""
    precheck(station, [t.target() for t in body.targets], body.clip_sha256, who.commune)
    with refused_as_http():
        info = station.broadcasting.play_now(
            [t.target() for t in body.targets],
            by=who.name,
            clip_sha256=body.clip_sha256,
            stream_url=body.stream_url,
            stream_duration_s=body.stream_duration_s,
            level=body.level,
            label=body.label,
            gain_db=body.gain_db,
            repeat=body.repeat,
            approved=who.can(Permission.APPROVE),
            commune=who.commune,
        )
    if isinstance(info, Held):
        return held_out(db, who, info)
    audit_sent(db, who, "broadcast.play", info)
    return info


def emergency(
    station: Station,
    db: DbSession,
    who: Principal,
    *,
    targets: list[Target],
    clip: str,
    label: str,
) -> BroadcastInfo:
    precheck(station, targets, clip, who.commune)
    with refused_as_http():
        info = station.broadcasting.emergency(
            targets, clip, by=who.name, label=label, commune=who.commune
        )
    audit_sent(db, who, "broadcast.emergency", info)
    return info


def stop(
    station: Station, db: DbSession, who: Principal, targets: list[Target], level: str
) -> BroadcastInfo:
    precheck(station, targets, commune=who.commune)
    with refused_as_http():
        info = station.broadcasting.stop(
            targets,
            by=who.name,
            level=level,  # type: ignore[arg-type]
            commune=who.commune,
        )
    audit_sent(db, who, "broadcast.stop", info)
    return info


@router.post(
    "/api/broadcasts",
    response_model=BroadcastSentOut,
    status_code=201,
    responses={**SEND_ERRORS, 202: {"model": HeldOut, "description": "Waits for approval"}},
)
def api_play(body: PlayIn, station: StationDep, db: DbSession, who: Broadcaster) -> Response:
    """Play a clip (or relay a stream) now on every speaker of the targets, all together.

    The answer counts the speakers; `GET /api/broadcasts/{id}` lists their answers.
    With the commune's approval on, a broadcaster's play waits for a leader: 202, and
    nothing is sent until `POST /api/approvals/{approval_id}/approve`."""
    info = play(station, db, who, body)
    if isinstance(info, HeldOut):
        return JSONResponse(info.model_dump(), status_code=202)
    return JSONResponse(BroadcastSentOut.of(info).model_dump(), status_code=201)


@router.post(
    "/api/broadcasts/emergency",
    response_model=BroadcastSentOut,
    status_code=201,
    responses=SEND_ERRORS,
)
def api_emergency(
    body: EmergencyIn, station: StationDep, db: DbSession, who: Broadcaster
) -> BroadcastSentOut:
    """Khẩn cấp: interrupts everything, ignores quiet hours; needs `"confirm": true`.

    The answer counts the speakers; `GET /api/broadcasts/{id}` lists their answers."""
    targets = [t.target() for t in body.targets]
    return BroadcastSentOut.of(
        emergency(station, db, who, targets=targets, clip=body.clip_sha256, label=body.label)
    )


@router.post(
    "/api/broadcasts/stop", response_model=BroadcastSentOut, status_code=201, responses=SEND_ERRORS
)
def api_stop(
    body: StopIn, station: StationDep, db: DbSession, who: Broadcaster
) -> BroadcastSentOut:
    """Stop what plays at or below a level on every speaker of the targets."""
    return BroadcastSentOut.of(
        stop(station, db, who, [t.target() for t in body.targets], body.level)
    )


@router.get("/api/broadcasts", response_model=list[BroadcastSentOut], responses=SEND_ERRORS)
def api_recent(
    station: StationDep,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=1_000_000, description="Skip this many newer ones first")
    ] = 0,
) -> list[BroadcastSentOut]:
    """The newest broadcasts first, a page of them (``limit`` from ``offset``), each with
    how many speakers it reached and answered; the answers themselves are on
    `GET /api/broadcasts/{id}` (a province's broadcast has thousands). A commune user:
    their commune's, and the province's that reached its speakers, counted on its own
    speakers only."""
    found = station.broadcasting.recent(limit, commune=who.commune, offset=offset)
    return [BroadcastSentOut.of(b) for b in found]


@router.get("/api/broadcasts/{broadcast_id}", response_model=BroadcastOut, responses=SEND_ERRORS)
def api_get(broadcast_id: BroadcastId, station: StationDep, who: Viewer) -> BroadcastOut:
    """One broadcast and its acks."""
    with refused_as_http():
        info = station.broadcasting.get(broadcast_id)
    if info.kind not in BROADCAST_KINDS:  # a console command: GET /api/commands/{id}
        raise i18n.Refusal(404, "error.not_found")
    seen = station.broadcasting.seen_by(info, who.commune)
    if seen is None:  # another commune's: not seen
        raise i18n.Refusal(404, "error.not_found")
    return BroadcastOut.of(seen)


# pages


def form_targets(values: list[str]) -> list[Target]:
    """Checkbox values `group:thon-1`, `device:loa-1`; the services check they exist."""
    targets = []
    for value in values:
        kind, _, ident = value.partition(":")
        if kind not in ("group", "device"):
            raise i18n.Refusal(422, "bc.no_target")
        targets.append(Target(kind, ident[:48]))  # type: ignore[arg-type]
    if not targets:
        raise i18n.Refusal(422, "bc.no_target")
    return targets


def broadcasts_page_with(request: Request, station: Station, error: i18n.Refusal) -> HTMLResponse:
    """The broadcasts page again, with why a send from it was refused."""
    return _page(request, station, error.status, error)


def _commune_of(request: Request) -> str | None:
    who: Principal | None = getattr(request.state, "principal", None)
    return who.commune if who is not None else None


def _page(
    request: Request,
    station: Station,
    status_code: int = 200,
    error: i18n.Refusal | None = None,
    sent: str = "",
) -> HTMLResponse:
    commune = _commune_of(request)
    return render(
        request,
        "broadcasts.html",
        status_code=status_code,
        error=error,
        sent=sent,
        connected=station.connected,
        choices=target_choices(station, request, "/broadcasts", commune=commune),
        clips=station.library.choices(commune),
        stations=station.stations.stations(commune),
        broadcasts=station.broadcasting.recent(30, commune=commune),
    )


@router.get("/broadcasts", response_class=HTMLResponse, include_in_schema=False)
def broadcasts_page(request: Request, station: StationDep, who: Broadcaster) -> Response:
    sent = request.query_params.get("sent", "")
    return _page(request, station, sent=sent[:32])


@router.post("/broadcasts/play", include_in_schema=False)
def page_play(
    *,
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Broadcaster,
    target: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    clip: Annotated[str, Form()] = "",
    level: Annotated[str, Form()] = "normal",
    label: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        body = PlayIn.model_validate(
            {
                "targets": [vars(t) for t in form_targets(target)],
                "clip_sha256": clip or None,
                "level": level,
                "label": label,
            }
        )
        info = play(station, db, who, body)
    except i18n.Refusal as refused:
        return _page(request, station, refused.status, refused)
    except ValueError:
        return _page(request, station, 422, i18n.Refusal(422, "bc.no_clip"))
    if isinstance(info, HeldOut):
        return RedirectResponse("/broadcasts?held=1", status_code=303)
    return RedirectResponse(f"/broadcasts?sent={info.id}", status_code=303)


@router.post("/broadcasts/emergency", include_in_schema=False)
def page_emergency(
    *,
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Broadcaster,
    target: Annotated[list[str], Form()] = [],  # noqa: B006
    clip: Annotated[str, Form()] = "",
    label: Annotated[str, Form(max_length=200)] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """First the confirmation page; only its own button (confirmed=yes) sends."""
    try:
        targets = form_targets(target)
        with refused_as_http():
            chosen = station.library.get(clip, who.commune) if clip else None
            if chosen is None:
                raise i18n.Refusal(422, "bc.no_clip")
            fleet = station.scheduling.fleet
            devices = sorted({d for t in targets for d in fleet.members_within(t, who.commune)})
        if confirmed != "yes":
            return render(
                request,
                "broadcast_confirm.html",
                targets=target,
                clip=chosen,
                label=label,
                devices=devices,
            )
        info = emergency(station, db, who, targets=targets, clip=chosen.sha256, label=label)
    except i18n.Refusal as refused:
        return _page(request, station, refused.status, refused)
    return RedirectResponse(f"/broadcasts?sent={info.id}", status_code=303)


@router.post("/broadcasts/stop", include_in_schema=False)
def page_stop(
    *,
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Broadcaster,
    target: Annotated[list[str], Form()] = [],  # noqa: B006
) -> Response:
    try:
        info = stop(station, db, who, form_targets(target), "emergency")
    except i18n.Refusal as refused:
        return _page(request, station, refused.status, refused)
    return RedirectResponse(f"/broadcasts?sent={info.id}", status_code=303)
