"""The technician's console: a speaker's or a group's volume, a test tone, an agent restart.

The commands are the protocol's `device.volume`, `device.test_tone` and
`device.restart_agent`, signed and sent by controller.radio.broadcasting as a
broadcast is: one publish per target topic, a row per speaker reached, its ack
recorded by ingest. So the console shows each speaker's answer as the
broadcasts page does, live (controller/web/routes/live.py). All of it needs
`manage_devices` (technicians and admins) and is audited; a restart asks for a
confirmation, in the API (`"confirm": true`) and on the page (a checkbox).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from controller import i18n
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.db.broadcast_tables import BroadcastRow
from controller.deps import DbSession, StationDep, require
from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.station import Station, invalid_input, refused_as_http
from controller.radio.targets import Target
from controller.web.routes import error_responses, render
from controller.web.routes.broadcast_schemas import AckOut, TargetOut, Targets
from controller.web.routes.broadcasts import form_targets, precheck
from controller.web.routes.targets import target_choices
from protocol.commands import DeviceTestTone, DeviceVolume, Empty, Strict
from protocol.errors import RefusalReason
from protocol.topics import ID_PATTERN

router = APIRouter(tags=["console"])
Technician = Annotated[Principal, Depends(require(Permission.MANAGE_DEVICES))]
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
SEND_ERRORS = error_responses(401, 403, 404, 422, 503)
CommandId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
KINDS = ("volume", "tone", "restart")
ACTIONS = {"volume": "device.volume", "tone": "device.test_tone", "restart": "device.restart"}

i18n.register(
    {
        "nav.console": ("Điều khiển", "Console"),
        "console.title": ("Điều khiển cụm loa", "Speaker console"),
        "console.intro": (
            "Đặt âm lượng, phát âm thử hoặc khởi động lại phần mềm của cụm loa hay cả nhóm. "
            "Trả lời của từng cụm loa hiện ngay bên dưới.",
            "Set the volume, play a test tone or restart the software of a speaker or a "
            "whole group. Each speaker's answer shows below as it arrives.",
        ),
        "console.volume": ("Âm lượng", "Volume"),
        "console.volume_pct": ("Âm lượng (0–100 %)", "Volume (0–100 %)"),
        "console.set_volume": ("Đặt âm lượng", "Set the volume"),
        "console.tone": ("Phát âm thử", "Test tone"),
        "console.frequency": ("Tần số (Hz)", "Frequency (Hz)"),
        "console.duration": ("Thời lượng (giây)", "Duration (s)"),
        "console.play_tone": ("Phát âm thử", "Play a test tone"),
        "console.restart": ("Khởi động lại phần mềm", "Restart the agent"),
        "console.restart_intro": (
            "Phần mềm trên cụm loa tắt rồi tự bật lại trong vài giây; nội dung đang phát "
            "sẽ bị ngắt.",
            "The speaker's software stops and starts again within seconds; whatever plays is cut.",
        ),
        "console.restart_confirm": (
            "Tôi chắc chắn muốn khởi động lại",
            "I am sure I want to restart it",
        ),
        "console.no_confirm": (
            "Hãy đánh dấu ô xác nhận trước khi khởi động lại.",
            "Tick the confirmation box before restarting.",
        ),
        "console.recent": ("Lệnh gần đây", "Recent commands"),
        "console.empty": ("Chưa có lệnh nào.", "No commands yet."),
        "console.sent": (
            "Đã gửi lệnh. Trả lời của cụm loa hiện trong bảng «Lệnh gần đây».",
            "Command sent. The speakers' answers show in «Recent commands».",
        ),
        "console.what": ("Lệnh", "Command"),
        "kind.volume": ("Âm lượng", "Volume"),
        "kind.tone": ("Âm thử", "Test tone"),
        "kind.restart": ("Khởi động lại", "Restart"),
        "ack.wait": ("Đang chờ trả lời", "Waiting for an answer"),
        "ack.ok": ("Đã nhận", "Done"),
        "ack.refused": ("Thiết bị từ chối lệnh", "The device refused the command"),
        "ack.expired": (
            "Lệnh đến quá muộn (thiết bị mất kết nối lâu); hãy gửi lại",
            "The command arrived too late (the device was offline); send it again",
        ),
        "ack.from_future": (
            "Đồng hồ thiết bị lệch; kiểm tra đồng bộ giờ",
            "The device's clock is off; check its time sync",
        ),
        "ack.unknown_kid": (
            "Thiết bị chưa tin khóa ký hiện tại; triển khai lại cấu hình của nó",
            "The device does not trust the current signing key; deploy its configuration again",
        ),
        "ack.bad_signature": (
            "Thiết bị không nhận chữ ký; triển khai lại cấu hình của nó",
            "The device rejected the signature; deploy its configuration again",
        ),
        "ack.unsupported": (
            "Thiết bị không có chức năng này",
            "The device has no such function",
        ),
        "ack.unknown_type": (
            "Phần mềm thiết bị cũ, chưa biết lệnh này; hãy cập nhật",
            "The device's software is too old for this command; update it",
        ),
        "ack.quiet_hours": ("Đang trong giờ yên tĩnh", "Quiet hours are on"),
        "ack.handler_failed": (
            "Thiết bị gặp lỗi khi thực hiện; xem sự kiện của thiết bị",
            "The device failed to carry it out; see its events",
        ),
    }
)
_ACK_REASONS = frozenset(
    r.value
    for r in (
        RefusalReason.EXPIRED,
        RefusalReason.FROM_FUTURE,
        RefusalReason.UNKNOWN_KID,
        RefusalReason.BAD_SIGNATURE,
        RefusalReason.UNSUPPORTED,
        RefusalReason.UNKNOWN_TYPE,
        RefusalReason.QUIET_HOURS,
        RefusalReason.HANDLER_FAILED,
    )
)


def ack_text(lang: i18n.Lang, ok: bool | None, error: str | None) -> str:
    """A speaker's answer as a person reads it: what happened, and what to do."""
    if ok is None:
        return i18n.t(lang, "ack.wait")
    if ok:
        return i18n.t(lang, "ack.ok")
    return i18n.t(lang, f"ack.{error}" if error in _ACK_REASONS else "ack.refused")


class VolumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: Targets
    volume_pct: Annotated[int, Field(ge=0, le=100)]


class ToneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: Targets
    frequency_hz: Annotated[int, Field(ge=20, le=20000)] = 1000
    duration_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    gain_db: Annotated[float, Field(ge=-60, le=20)] = -12.0


class RestartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: Targets
    confirm: Literal[True] = Field(description="Must be true: the explicit confirmation")


class CommandOut(BaseModel):
    id: str
    kind: Literal["volume", "tone", "restart"]
    targets: list[TargetOut]
    created_by: str
    created_ms: int
    status: Literal["sent", "acked", "partial", "refused"]
    acks: list[AckOut]

    @classmethod
    def of(cls, info: BroadcastInfo) -> CommandOut:
        return cls(
            id=info.id,
            kind=info.kind,  # type: ignore[arg-type]
            targets=[TargetOut(kind=t.kind, id=t.id) for t in info.targets],
            created_by=info.created_by,
            created_ms=info.created_ms,
            status=info.status,  # type: ignore[arg-type]
            acks=[AckOut(**vars(a)) for a in info.acks],
        )


def send(
    station: Station,
    db: DbSession,
    who: Principal,
    kind: str,
    targets: list[Target],
    *,
    body: Strict,
) -> BroadcastInfo:
    """Checked (bad input first, then the broker), sent, audited."""
    precheck(station, targets, commune=who.commune)
    with refused_as_http():
        info = station.broadcasting.device_command(
            kind, targets, body, by=who.name, commune=who.commune
        )
    details: dict[str, Any] = {"command": info.id, **msgspec.to_builtins(body)}
    details["devices"] = [a.device for a in info.acks]
    audit(db, who, ACTIONS[kind], ",".join(f"{t.kind}:{t.id}" for t in targets), details)
    db.commit()
    return info


def _targets(body: VolumeIn | ToneIn | RestartIn) -> list[Target]:
    return [t.target() for t in body.targets]


@router.post(
    "/api/commands/volume", response_model=CommandOut, status_code=201, responses=SEND_ERRORS
)
def api_volume(body: VolumeIn, station: StationDep, db: DbSession, who: Technician) -> CommandOut:
    """Set the volume of every speaker of the targets; each answers with an ack."""
    volume = DeviceVolume(volume_pct=body.volume_pct)
    return CommandOut.of(send(station, db, who, "volume", _targets(body), body=volume))


@router.post(
    "/api/commands/test-tone", response_model=CommandOut, status_code=201, responses=SEND_ERRORS
)
def api_tone(body: ToneIn, station: StationDep, db: DbSession, who: Technician) -> CommandOut:
    """Play a sine tone on every speaker of the targets (it queues behind what plays)."""
    tone = DeviceTestTone(
        frequency_hz=body.frequency_hz, duration_s=body.duration_s, gain_db=body.gain_db
    )
    return CommandOut.of(send(station, db, who, "tone", _targets(body), body=tone))


@router.post(
    "/api/commands/restart", response_model=CommandOut, status_code=201, responses=SEND_ERRORS
)
def api_restart(body: RestartIn, station: StationDep, db: DbSession, who: Technician) -> CommandOut:
    """Restart the agent of every speaker of the targets; needs `"confirm": true`."""
    return CommandOut.of(send(station, db, who, "restart", _targets(body), body=Empty()))


@router.get("/api/commands", response_model=list[CommandOut], responses=SEND_ERRORS)
def api_recent(
    station: StationDep, who: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[CommandOut]:
    """The console's newest commands first, each with every reached speaker's answer."""
    station.check_site()
    recent = station.broadcasting.recent(limit, kinds=KINDS, commune=who.commune)
    return [CommandOut.of(c) for c in recent]


@router.get("/api/commands/{command_id}", response_model=CommandOut, responses=SEND_ERRORS)
def api_get(command_id: CommandId, station: StationDep, who: Viewer) -> CommandOut:
    """One command and its acks."""
    station.check_site()
    with refused_as_http():
        info = station.broadcasting.get(command_id)
    seen = station.broadcasting.seen_by(info, who.commune) if info.kind in KINDS else None
    if seen is None:
        raise i18n.Refusal(404, "error.not_found")
    return CommandOut.of(seen)


# pages
SCAN_FOR_DEVICE = 500  # console commands read to find a speaker's latest


def device_commands(db: DbSession, station: Station, device_id: str, limit: int = 10) -> list[Any]:
    """The console commands that reached one speaker, answered or not, newest first (its
    device page). The speakers reached are a JSON list on the broadcast row: the recent
    console commands are read and filtered here, as a speaker's page shows only a few."""
    rows = db.execute(
        select(BroadcastRow.id, BroadcastRow.devices)
        .where(BroadcastRow.kind.in_(KINDS))
        .order_by(BroadcastRow.created_ms.desc())
        .limit(SCAN_FOR_DEVICE)
    ).all()
    ids = [r.id for r in rows if device_id in (r.devices or ())][:limit]
    return [station.broadcasting.get(i) for i in ids]


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
def console_page(request: Request, station: StationDep, who: Technician) -> Response:
    try:
        commands = station.broadcasting.recent(30, kinds=KINDS, commune=who.commune)
    except i18n.Refusal:  # no site yet: nothing sent, nothing to send to
        commands = []
    return render(
        request,
        "console.html",
        connected=station.connected,
        choices=target_choices(station, request, "/console", commune=who.commune),
        commands=commands,
        sent=request.query_params.get("sent") == "1",
        ack_text=ack_text,
    )


DeviceField = Annotated[str, Form(pattern=f"^({ID_PATTERN})?$", max_length=48)]


def _done(device: str) -> Response:
    """Back where the form was: the device's page, or the console."""
    where = f"/devices/{device}" if device else "/console"
    return RedirectResponse(f"{where}?sent=1#commands", status_code=303)


@router.post("/console/{kind}", include_in_schema=False)
def console_form(
    *,
    station: StationDep,
    db: DbSession,
    who: Technician,
    kind: Literal["volume", "tone", "restart"],
    target: Annotated[list[str], Form(max_length=100)] = [],  # noqa: B006 - FastAPI copies
    device: DeviceField = "",
    volume_pct: Annotated[str, Form(max_length=8)] = "",
    frequency_hz: Annotated[str, Form(max_length=8)] = "1000",
    duration_s: Annotated[str, Form(max_length=8)] = "3",
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    targets = form_targets([f"device:{device}"] if device else target)
    raw = [vars(t) for t in targets]
    try:
        if kind == "volume":
            vol = VolumeIn.model_validate({"targets": raw, "volume_pct": _number(volume_pct)})
            send(station, db, who, kind, targets, body=DeviceVolume(volume_pct=vol.volume_pct))
        elif kind == "tone":
            tone = ToneIn.model_validate(
                {"targets": raw, "frequency_hz": _number(frequency_hz),
                 "duration_s": _number(duration_s)}
            )  # fmt: skip
            body = DeviceTestTone(
                frequency_hz=tone.frequency_hz, duration_s=tone.duration_s, gain_db=tone.gain_db
            )
            send(station, db, who, kind, targets, body=body)
        else:
            if confirm != "yes":
                raise i18n.Refusal(422, "console.no_confirm")
            send(station, db, who, kind, targets, body=Empty())
    except ValidationError as exc:
        raise invalid_input(exc) from None
    return _done(device)


def _number(text: str) -> float | int | str:
    """A form's number as a number (the models are strict about types); else as given."""
    text = text.strip().replace(",", ".")
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
