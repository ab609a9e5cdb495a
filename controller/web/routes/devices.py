"""Changing the fleet from the web: add and remove devices, edit groups, rotate signing keys.

All of it needs `manage_devices` (technicians and admins), within the
principal's commune (controller/auth/tenancy.py): a commune's technician adds
devices to their commune only, and changes or removes only its devices; the
signing keys are the province's. It is written to the
site directory by controller/site/devices.py, reloads the broker
(controller/site/admin.py), mirrors the registry into the database at once,
and is audited. A new device's agent configuration holds its MQTT password:
it is shown once, in the answer to the request that made it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError

from controller import i18n
from controller.auth import tenancy
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, app_state, require
from controller.radio.station import invalid_input
from controller.site import admin
from controller.site.devices import add_device, remove_device, set_groups
from controller.site.directory import ProvisioningError
from controller.site.documents import mark_delivered
from controller.web.routes import error_responses, render
from controller.web.routes.fleet import DeviceId
from protocol.topics import ID_PATTERN

router = APIRouter(tags=["devices"])
Technician = Annotated[Principal, Depends(require(Permission.MANAGE_DEVICES))]
GroupId = Annotated[str, Field(pattern=f"^{ID_PATTERN}$", max_length=48)]
Groups = Annotated[list[GroupId], Field(max_length=32)]
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
CHANGE_ERRORS = error_responses(401, 403, 404, 409, 422, 502, 503)

i18n.register(
    {
        "devices.add": ("Thêm thiết bị", "Add a device"),
        "devices.manage": ("Quản lý thiết bị", "Manage the device"),
        "devices.id": ("Mã thiết bị", "Device id"),
        "devices.groups_field": ("Nhóm (cách nhau bởi dấu cách)", "Groups (space separated)"),
        "devices.save_groups": ("Lưu nhóm", "Save groups"),
        "devices.remove": ("Xóa thiết bị", "Remove the device"),
        "devices.remove_confirm": (
            "Tôi chắc chắn muốn xóa {id}",
            "I am sure I want to remove {id}",
        ),
        "devices.added": ("Đã thêm thiết bị {id}.", "Device {id} added."),
        "devices.config_once": (
            "Đây là cấu hình của thiết bị, có mật khẩu MQTT. Chỉ hiện một lần: tải về rồi chép "
            "vào /etc/xaso/agent.toml trên thiết bị (quyền 0600).",
            "This is the device's configuration, with its MQTT password. It is shown once: "
            "download it and copy it to /etc/xaso/agent.toml on the device (mode 0600).",
        ),
        "devices.download": ("Tải cấu hình về", "Download the configuration"),
        "devices.reload.signal": ("Máy chủ MQTT đã nạp lại.", "The MQTT broker has reloaded."),
        "devices.reload.command": ("Máy chủ MQTT đã nạp lại.", "The MQTT broker has reloaded."),
        "devices.reload.manual": (
            "Chưa cấu hình cách nạp lại máy chủ MQTT: hãy nạp lại bằng tay.",
            "No broker reload is configured: reload the MQTT broker by hand.",
        ),
        "devices.no_confirm": (
            "Hãy đánh dấu ô xác nhận trước khi xóa.",
            "Tick the confirmation box before removing.",
        ),
        "devices.role.speaker": ("Cụm loa truyền thanh", "Loudspeaker cluster"),
        "devices.role.kiosk": ("Máy lấy số (bộ phận một cửa)", "Queue kiosk (one-stop office)"),
        "devices.other_commune": (
            "Bạn chỉ thêm thiết bị cho xã mình: chọn xã của bạn.",
            "You add devices to your own commune only: choose your commune.",
        ),
        "keys.province_only": (
            "Khóa ký dùng chung cho cả tỉnh: chỉ quản trị viên hoặc kỹ thuật viên cấp tỉnh "
            "đổi được. Liên hệ tỉnh nếu cần.",
            "The signing keys are the whole province's: only a province administrator or "
            "technician changes them. Contact the province if needed.",
        ),
        "keys.title": ("Khóa ký", "Signing keys"),
        "keys.active": ("Khóa đang dùng", "Active key"),
        "keys.staged": ("Khóa mới đang chờ", "Staged key"),
        "keys.trusted": ("Các khóa thiết bị tin", "Keys devices trust"),
        "keys.stage": ("Tạo khóa mới", "Stage a new key"),
        "keys.check": ("Kiểm tra thiết bị đã tin khóa mới", "Check which devices trust it"),
        "keys.activate": ("Dùng khóa mới", "Activate the staged key"),
        "keys.steps": (
            "Đổi khóa: 1) tạo khóa mới; 2) triển khai lại cấu hình các thiết bị "
            "(thư mục devices/ của hệ thống); 3) kiểm tra; "
            "4) khi mọi thiết bị đã tin, dùng khóa mới.",
            "Rotation: 1) stage a new key; 2) deploy the devices' configurations again (the "
            "site's devices/ folder); 3) check; 4) once every device trusts it, activate it.",
        ),
        "keys.answer": ("Trả lời", "Answer"),
        "keys.no_answer": ("Chưa trả lời", "No answer yet"),
    }
)


class DeviceCreate(BaseModel):
    id: Annotated[str, Field(pattern=f"^{ID_PATTERN}$", max_length=48)]
    roles: Annotated[list[Literal["speaker", "kiosk"]], Field(min_length=1, max_length=2)]
    groups: Groups = []
    name: Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    commune: Annotated[str, Field(max_length=48, description="Its commune (a commune user's own "
                                  "by default; empty: the province's)")] = ""  # fmt: skip


class DeviceAdded(BaseModel):
    device_id: str
    config_toml: str  # shown once: it holds the device's MQTT password
    broker_reload: str  # signal | command | manual


class DeviceChanged(BaseModel):
    device_id: str
    groups: list[str]
    broker_reload: str


class GroupsIn(BaseModel):
    groups: Groups


class KeysOut(BaseModel):
    active: str
    staged: str | None
    trusted: list[str]
    answers: dict[str, str]  # device id: "ok" or the agent's error for the staged key


class KeyIn(BaseModel):
    kid: KeyId


def _changed(request: Request) -> None:
    """Mirror the registry now, so the very next page shows the change."""
    fleet = app_state(request).fleet
    if fleet is not None:
        fleet.sync_registry(force=True)


def _within(request: Request, who: Principal, device_id: str) -> None:
    """A device the principal may change: one of the site's, and of their commune."""
    site = admin.site_of(app_state(request).settings)
    entry = next((d for d in site.devices() if d.id == device_id), None)
    if entry is None or not tenancy.sees(who.commune, entry.commune):
        raise i18n.Refusal(404, "fleet.no_device", id=device_id)


def _province_only(who: Principal) -> None:
    if not tenancy.is_province(who.commune):
        raise i18n.Refusal(403, "keys.province_only")


def _add(request: Request, db: DbSession, who: Principal, body: DeviceCreate) -> DeviceAdded:
    settings = app_state(request).settings
    admin.site_of(settings)
    commune = body.commune or who.commune or ""
    if not tenancy.sees(who.commune, commune):
        raise i18n.Refusal(403, "devices.other_commune")
    try:
        path = add_device(
            settings.site_dir,
            body.id,
            body.roles,
            body.groups,
            broker_host=settings.mqtt.host,
            broker_port=settings.mqtt.port,
            name=body.name,
            tls=settings.mqtt.tls,
            commune=commune,
        )
    except ProvisioningError as exc:
        raise admin.refusal(exc) from None
    _changed(request)
    details = body.model_dump(exclude={"id", "commune"}) | ({"commune": commune} if commune else {})
    audit(db, who, "device.add", f"device:{body.id}", details)
    db.commit()
    reload = admin.reload_broker(settings)
    return DeviceAdded(
        device_id=body.id, config_toml=path.read_text(encoding="utf-8"), broker_reload=reload
    )


def _remove(request: Request, db: DbSession, who: Principal, device_id: str) -> DeviceChanged:
    settings = app_state(request).settings
    _within(request, who, device_id)
    try:
        remove_device(settings.site_dir, device_id)
    except ProvisioningError as exc:
        raise i18n.Refusal(404, "fleet.no_device", id=device_id) from exc
    _changed(request)
    audit(db, who, "device.remove", f"device:{device_id}")
    db.commit()
    reload = admin.reload_broker(settings)
    return DeviceChanged(device_id=device_id, groups=[], broker_reload=reload)


def _set_groups(
    request: Request, db: DbSession, who: Principal, device_id: str, groups: list[str]
) -> DeviceChanged:
    state = app_state(request)
    settings = state.settings
    site = admin.site_of(settings)
    _within(request, who, device_id)
    # the running agent learns its groups from a signed config.set: refuse the change
    # whole rather than leave the ACL and the agent's subscriptions disagreeing
    assert state.station is not None
    state.station.check_can_send()
    try:
        set_groups(settings.site_dir, device_id, groups)
    except ProvisioningError as exc:
        raise admin.refusal(exc, 422) from None
    _changed(request)
    audit(db, who, "device.groups", f"device:{device_id}", {"groups": groups})
    db.commit()
    reload = admin.reload_broker(settings)
    signed = admin.signed_groups(state.sessions, site, device_id, groups, state.now_ms())
    state.station.publish(signed.topic, signed.payload, retain=True)
    with state.sessions.begin() as session:
        mark_delivered(session, signed, state.now_ms())
    return DeviceChanged(device_id=device_id, groups=groups, broker_reload=reload)


@router.post("/api/devices", status_code=201, response_model=DeviceAdded, responses=CHANGE_ERRORS)
def api_add(request: Request, db: DbSession, who: Technician, body: DeviceCreate) -> DeviceAdded:
    """Register a device, write its agent configuration and reload the broker. The answer
    holds the configuration with the device's MQTT password: keep it, it is not shown again."""
    return _add(request, db, who, body)


@router.delete("/api/devices/{device_id}", response_model=DeviceChanged, responses=CHANGE_ERRORS)
def api_remove(
    request: Request, db: DbSession, who: Technician, device_id: DeviceId
) -> DeviceChanged:
    """Forget a device: its password and ACL entries go at the reload; its history stays."""
    return _remove(request, db, who, device_id)


@router.put(
    "/api/devices/{device_id}/groups", response_model=DeviceChanged, responses=CHANGE_ERRORS
)
def api_groups(
    request: Request, db: DbSession, who: Technician, device_id: DeviceId, body: GroupsIn
) -> DeviceChanged:
    """Set a device's groups (registry, its generated configuration, the broker's ACL)."""
    return _set_groups(request, db, who, device_id, list(dict.fromkeys(body.groups)))


@router.get("/devices/new", response_class=HTMLResponse, include_in_schema=False)
def add_page(request: Request, who: Technician) -> Response:
    site = admin.site_of(app_state(request).settings)
    communes = [c for c in site.communes() if tenancy.sees(who.commune, c.id)]
    return render(request, "device_new.html", communes=communes, province=who.commune is None)


@router.post("/devices/new", response_class=HTMLResponse, include_in_schema=False)
def add_form(
    *,
    request: Request,
    db: DbSession,
    who: Technician,
    device_id: Annotated[str, Form(alias="id", max_length=200)],
    roles: Annotated[list[str], Form(max_length=4)],
    groups: Annotated[str, Form(max_length=1600)] = "",
    name: Annotated[str, Form(max_length=400)] = "",
    commune: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    try:
        body = DeviceCreate.model_validate(
            {
                "id": device_id.strip(),
                "roles": roles,
                "groups": _words(groups),
                "name": name.strip(),
                "commune": commune.strip(),
            }
        )
    except ValidationError as exc:
        raise invalid_input(exc) from None
    added = _add(request, db, who, body)
    return render(request, "device_added.html", added=added)


@router.post("/devices/{device_id}/remove", include_in_schema=False)
def remove_form(
    request: Request,
    db: DbSession,
    who: Technician,
    device_id: DeviceId,
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    if confirm != "yes":
        raise i18n.Refusal(422, "devices.no_confirm")
    _remove(request, db, who, device_id)
    return RedirectResponse("/", status_code=303)


@router.post("/devices/{device_id}/groups", include_in_schema=False)
def groups_form(
    request: Request,
    db: DbSession,
    who: Technician,
    device_id: DeviceId,
    groups: Annotated[str, Form(max_length=1600)] = "",
) -> Response:
    try:
        body = GroupsIn.model_validate({"groups": _words(groups)})
    except ValidationError as exc:
        raise invalid_input(exc) from None
    _set_groups(request, db, who, device_id, list(dict.fromkeys(body.groups)))
    return RedirectResponse(f"/devices/{device_id}", status_code=303)


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,;]+", text) if w]


# Signing keys


def _keys(request: Request, db: DbSession) -> KeysOut:
    site = admin.site_of(app_state(request).settings)
    status = admin.key_status(site)
    answers = admin.trust_answers(db, status.staged) if status.staged else {}
    return KeysOut(**vars(status), answers=answers)


@router.get("/api/keys", response_model=KeysOut, responses=error_responses(401, 403))
def api_keys(request: Request, db: DbSession, who: Technician) -> KeysOut:
    """The active key, the staged one if any, and what each device answered to the check."""
    _province_only(who)
    return _keys(request, db)


@router.post("/api/keys/stage", response_model=KeysOut, responses=CHANGE_ERRORS)
def api_stage(request: Request, db: DbSession, who: Technician) -> KeysOut:
    """Rotation step 1: a new key every generated device configuration now trusts."""
    _province_only(who)
    kid = admin.stage_key(app_state(request).settings)
    audit(db, who, "key.stage", f"key:{kid}")
    db.commit()
    return _keys(request, db)


@router.post(
    "/api/keys/check", response_model=KeysOut, responses=error_responses(401, 403, 409, 503)
)
def api_check(request: Request, db: DbSession, who: Technician) -> KeysOut:
    """Rotation step 3: ping every device with the staged key; answers arrive as acks."""
    _province_only(who)
    state = app_state(request)
    site = admin.site_of(state.settings)
    try:
        pings = admin.staged_key_check(site, state.now_ms())
    except ProvisioningError as exc:
        raise admin.refusal(exc) from None
    assert state.station is not None
    state.station.check_can_send()
    for topic, payload in pings:
        state.station.publish(topic, payload)
    return _keys(request, db)


@router.post("/api/keys/activate", response_model=KeysOut, responses=CHANGE_ERRORS)
def api_activate(request: Request, db: DbSession, who: Technician, body: KeyIn) -> KeysOut:
    """Rotation step 4: the staged key signs from now on; the old one stays trusted."""
    _province_only(who)
    admin.activate_key(app_state(request).settings, body.kid)
    audit(db, who, "key.activate", f"key:{body.kid}")
    db.commit()
    return _keys(request, db)


@router.get("/keys", response_class=HTMLResponse, include_in_schema=False)
def keys_page(request: Request, db: DbSession, who: Technician) -> Response:
    _province_only(who)
    site = admin.site_of(app_state(request).settings)
    return render(request, "keys.html", keys=_keys(request, db), devices=site.devices())


@router.post("/keys/{step}", include_in_schema=False)
def keys_form(
    request: Request,
    db: DbSession,
    who: Technician,
    step: Literal["stage", "check", "activate"],
    kid: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    if step == "stage":
        api_stage(request, db, who)
    elif step == "check":
        api_check(request, db, who)
    else:
        try:
            body = KeyIn(kid=kid)
        except ValidationError as exc:
            raise invalid_input(exc) from None
        api_activate(request, db, who, body)
    return RedirectResponse("/keys", status_code=303)
