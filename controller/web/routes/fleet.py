"""The dashboard (`/`), the device page, and `/api/devices` for programs.

Reading only; changing devices (provisioning, groups, keys) is in devices.py.
Every page of devices costs a fixed number of queries (fleet/queries.py), so
`/api/devices` serves a province's 10,000 devices a page at a time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from sqlalchemy import select

from controller import i18n
from controller.auth.roles import Permission, Principal
from controller.db.fleet_tables import Alert, DeviceState, EventRecord
from controller.deps import DbSession, app_state, require
from controller.fleet.queries import (
    CHART_METRICS,
    RANGES,
    DeviceQuery,
    DeviceRow,
    Point,
    StateFilter,
    get_device,
    group_ids,
    health_series,
    list_devices,
    state_counts,
)
from controller.fleet.shared_pages import SharedPages
from controller.site.directory import ProvisioningError, Site
from controller.web.charts import line_chart
from controller.web.names import group_name
from controller.web.routes import (
    ERRORS,
    TEMPLATES,
    commune_names,
    error_responses,
    lang_of,
    local_time,
    render,
)
from controller.web.routes.console import ack_text, device_commands
from controller.web.routes.targets import GROUPS_LISTED, province_groups
from protocol.topics import ID_PATTERN, Topics
from protocol.uplink import ROLES

router = APIRouter()
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
DeviceId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", max_length=48)]
Span = Literal["24h", "7d"]
PAGE = 100

i18n.register(
    {
        "fleet.title": ("Thiết bị", "Devices"),
        "fleet.no_device": ("Không có thiết bị {id}.", "No device {id}."),
        "fleet.online": ("Trực tuyến", "Online"),
        "fleet.offline": ("Mất kết nối", "Offline"),
        "fleet.unknown": ("Chưa kết nối lần nào", "Never seen"),
        "fleet.alerting": ("Có cảnh báo", "With alerts"),
        "fleet.all": ("Tất cả", "All"),
        "fleet.group": ("Nhóm", "Group"),
        "fleet.roles": ("Chức năng", "Roles"),
        "fleet.search": ("Mã hoặc tên bắt đầu bằng", "Id or name starts with"),
        "fleet.filter": ("Lọc", "Filter"),
        "fleet.last_seen": ("Lần cuối", "Last seen"),
        "fleet.temp": ("Nhiệt độ", "Temperature"),
        "fleet.disk": ("Bộ nhớ trống", "Free disk"),
        "fleet.clock": ("Đồng hồ", "Clock"),
        "fleet.amp": ("Âm ly", "Amplifier"),
        "fleet.printer": ("Máy in", "Printer"),
        "fleet.alerts": ("Cảnh báo", "Alerts"),
        "fleet.synced": ("Đã đồng bộ", "Synced"),
        "fleet.unsynced": ("Chưa đồng bộ", "Not synced"),
        "fleet.on": ("Bật", "On"),
        "fleet.off": ("Tắt", "Off"),
        "fleet.paper.ok": ("Đủ giấy", "Paper OK"),
        "fleet.paper.near_end": ("Sắp hết giấy", "Paper low"),
        "fleet.paper.out": ("Hết giấy", "Out of paper"),
        "fleet.paper.unknown": ("Máy in không trả lời", "Printer not answering"),
        "fleet.cover_open": ("Mở nắp", "Cover open"),
        "fleet.count": ("{shown} / {total} thiết bị", "{shown} of {total} devices"),
        "fleet.next": ("Trang sau", "Next page"),
        "fleet.prev": ("Trang trước", "Previous page"),
        "fleet.none": ("Không có thiết bị nào khớp.", "No device matches."),
        "fleet.unregistered": ("(đã xóa khỏi danh sách)", "(removed from the registry)"),
        "fleet.health": ("Sức khỏe thiết bị", "Device health"),
        "fleet.range.24h": ("24 giờ", "24 hours"),
        "fleet.range.7d": ("7 ngày", "7 days"),
        "fleet.no_health": (
            "Chưa có số liệu: biểu đồ có sau vài phút thiết bị gửi số đo.",
            "No figures yet: the charts fill in a few minutes after the device reports.",
        ),
        "fleet.events": ("Sự kiện gần đây", "Recent events"),
        "fleet.agent": ("Phiên bản", "Agent"),
        "fleet.documents": ("Lịch phát, cấu hình", "Schedules, configuration"),
        "fleet.current": ("Đã nhận bản mới nhất", "Up to date"),
        "fleet.behind.schedule": (
            "Lịch phát cũ (phiên bản {held}, hiện tại {current})",
            "Old schedule (version {held}, current {current})",
        ),
        "fleet.behind.group_schedule": (
            "Lịch phát nhóm {group} cũ (phiên bản {held}, hiện tại {current})",
            "Old schedule of group {group} (version {held}, current {current})",
        ),
        "fleet.behind.config": (
            "Cấu hình cũ (phiên bản {held}, hiện tại {current})",
            "Old configuration (version {held}, current {current})",
        ),
        "fleet.behind.none": ("chưa có", "none"),
        "fleet.behind_since": ("Thấy cũ từ {when}", "Behind since {when}"),
        "fleet.resent": (
            "Đã tự động gửi lại {n} lần, lần cuối lúc {when}",
            "Sent again automatically {n} times, last at {when}",
        ),
        "metric.cpu_temp_c": ("Nhiệt độ CPU (°C)", "CPU temperature (°C)"),
        "metric.load1": ("Tải CPU (1 phút)", "CPU load (1 min)"),
        "metric.cpu_pct": ("CPU (%)", "CPU (%)"),
        "metric.mem_used_pct": ("Bộ nhớ RAM đã dùng (%)", "Memory used (%)"),
        "metric.disk_free_mb": ("Bộ nhớ trống (MB)", "Free disk (MB)"),
        "metric.signal_dbm": ("Sóng (dBm)", "Signal (dBm)"),
        "metric.clock_offset_ms": ("Lệch đồng hồ (ms)", "Clock offset (ms)"),
    }
)


class BehindOut(BaseModel):
    """A document the device holds an older version of than the controller last signed."""

    topic: str
    leaf: Literal["config", "schedule"]
    group: str | None  # the group whose schedule it is; null: the device's own document
    held: int  # 0: the device holds none
    current: int


class DeviceOut(BaseModel):
    id: str
    name: str
    roles: list[str]
    registered: bool
    groups: list[str]
    state: str  # online | offline | unknown
    last_seen_ms: int | None
    agent: str
    cpu_temp_c: float | None
    disk_free_mb: float | None
    disk_free_pct: float | None
    clock_synced: bool | None
    clock_offset_ms: float | None
    amplifier_on: bool | None
    printer_paper: str | None
    printer_cover: str | None
    alerts: list[str]
    behind: list[BehindOut]  # resent automatically (docs/controller-broadcast.md)
    behind_since_ms: int | None  # when the resender first saw it behind; null: not yet
    resends: int  # how often since
    resent_ms: int | None

    @classmethod
    def of(cls, r: DeviceRow) -> DeviceOut:
        return cls(**_fields(r))


def _fields(r: DeviceRow) -> dict[str, Any]:
    return {**vars(r), "behind": [BehindOut(**vars(b)) for b in r.behind]}


class DevicePage(BaseModel):
    total: int
    limit: int
    offset: int
    devices: list[DeviceOut]


class DeviceDetail(DeviceOut):
    telemetry: dict[str, Any] | None
    printer: dict[str, Any] | None


class HealthPoint(BaseModel):
    bucket_ms: int
    min: float
    avg: float
    max: float


class Health(BaseModel):
    device_id: str
    range: str
    period_s: int
    metrics: dict[str, list[HealthPoint]]


def _offline_ms(request: Request) -> int:
    return int(app_state(request).settings.alerts.offline_after_min * 60_000)


def _filters(
    group: Annotated[str, Query(pattern=f"^({ID_PATTERN})?$", max_length=48)] = "",
    state: StateFilter | None = None,
    role: Annotated[str, Query(pattern=f"^({'|'.join(ROLES)})?$")] = "",
    q: Annotated[str, Query(pattern=r"^[^\x00-\x1f\x7f%_\\]{0,48}$")] = "",
) -> DeviceQuery:
    return DeviceQuery(group=group, state=state, role=role, q=q)


Filters = Annotated[DeviceQuery, Depends(_filters)]


def _topics(request: Request) -> Topics | None:
    """The site's topics, to tell who is behind on documents; None before the site exists."""
    try:
        return Topics(Site(app_state(request).settings.site_dir).root)
    except ProvisioningError:
        return None


def _pages(request: Request) -> SharedPages:
    pages = app_state(request).pages
    assert pages is not None  # create_app makes them
    return pages


def _device(request: Request, db: DbSession, device_id: str, who: Principal) -> DeviceRow:
    """The device, if the principal's commune has it (another commune's: 404, unseen)."""
    now, topics = app_state(request).now_ms(), _topics(request)
    row = get_device(db, now, _offline_ms(request), device_id, topics, commune=who.commune)
    if row is None:
        raise i18n.Refusal(404, "fleet.no_device", id=device_id)
    return row


@router.get("/api/devices", response_model=DevicePage, tags=["fleet"], responses=ERRORS)
def api_devices(
    *,
    request: Request,
    db: DbSession,
    who: Viewer,
    f: Filters,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """Devices ordered by id with their latest state and open alerts. `state` is online,
    offline, unknown (never heard from) or alerting; `q` matches the start of id or name."""
    query = DeviceQuery(**{**vars(f), "limit": limit, "offset": offset, "commune": who.commune})

    def build() -> bytes:
        now = app_state(request).now_ms()
        total, rows = list_devices(db, now, _offline_ms(request), query, _topics(request))
        devices = [DeviceOut.of(r) for r in rows]
        page = DevicePage(total=total, limit=limit, offset=offset, devices=devices)
        return page.model_dump_json().encode()

    return Response(_pages(request).get(("api", query), build), media_type="application/json")


@router.get(
    "/api/devices/{device_id}",
    response_model=DeviceDetail,
    tags=["fleet"],
    responses=error_responses(401, 403, 404, 422),
)
def api_device(request: Request, db: DbSession, who: Viewer, device_id: DeviceId) -> DeviceDetail:
    """One device, with its whole latest telemetry sample and printer status."""
    row = _device(request, db, device_id, who)
    state = db.get(DeviceState, device_id)
    return DeviceDetail(
        **_fields(row),
        telemetry=state.telemetry if state else None,
        printer=state.printer if state else None,
    )


@router.get(
    "/api/devices/{device_id}/health",
    response_model=Health,
    tags=["fleet"],
    responses=error_responses(401, 403, 404, 422),
)
def api_health(
    request: Request,
    db: DbSession,
    who: Viewer,
    device_id: DeviceId,
    span: Annotated[Span, Query(alias="range")] = "24h",
) -> Health:
    """min/avg/max of each health metric: 5-minute buckets over 24 h, hourly over 7 d."""
    _device(request, db, device_id, who)
    series = health_series(db, device_id, app_state(request).now_ms(), span)
    return Health(
        device_id=device_id,
        range=span,
        period_s=RANGES[span][1],
        metrics={m: [HealthPoint(**vars(p)) for p in pts] for m, pts in series.items()},
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard(
    *,
    request: Request,
    db: DbSession,
    who: Viewer,
    f: Filters,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    query = DeviceQuery(**{**vars(f), "limit": PAGE, "offset": offset, "commune": who.commune})
    lang = lang_of(request)
    communes = commune_names(request)

    def summary() -> tuple[list[str], dict[str, int]]:
        now, off = app_state(request).now_ms(), _offline_ms(request)
        return group_ids(db, who.commune), state_counts(db, now, off, who.commune)

    def table() -> str:
        now = app_state(request).now_ms()
        total, rows = list_devices(db, now, _offline_ms(request), query, _topics(request))
        return TEMPLATES.get_template("_device_table.html").render(
            t=lambda key, **params: i18n.t(lang, key, **params),
            local_time=local_time,
            group=lambda ident: group_name(lang, ident, communes),
            devices=rows,
            total=total,
            offset=offset,
            page=PAGE,
            f=f,
        )

    pages = _pages(request)
    groups, counts = pages.get(("summary", who.commune), summary)

    def group_options() -> str:
        listed = groups
        if who.commune is None and communes and len(groups) > GROUPS_LISTED:
            # a province's 2,400 villages weighed most of its dashboard: its communes, and
            # the village filtered on (the device list's search finds the others)
            chosen = [f.group] if f.group else []
            listed = list(dict.fromkeys(province_groups(groups, set(communes), "") + chosen))
        return TEMPLATES.get_template("_group_options.html").render(
            groups=listed, chosen=f.group, group=lambda ident: group_name(lang, ident, communes)
        )

    return render(
        request,
        "dashboard.html",
        table=pages.get(("table", lang, query), table),
        group_options=pages.get(("group_options", lang, who.commune, f.group), group_options),
        f=f,
        counts=counts,
        roles=ROLES,
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse, include_in_schema=False)
def device_page(
    request: Request,
    db: DbSession,
    who: Viewer,
    device_id: DeviceId,
    span: Annotated[Span, Query(alias="range")] = "24h",
) -> Response:
    row = _device(request, db, device_id, who)
    now = app_state(request).now_ms()
    start = now - RANGES[span][0]
    lang = lang_of(request)

    def when(ms: int) -> str:
        return local_time(ms)[5:16]  # MM-DD HH:MM

    series: dict[str, list[Point]] = health_series(db, device_id, now, span)
    charts = [
        line_chart(series[m], start, now, i18n.t(lang, f"metric.{m}"), when)
        for m in CHART_METRICS
        if m in series
    ]
    alerts = db.scalars(
        select(Alert).where(Alert.device_id == device_id).order_by(Alert.id.desc()).limit(20)
    ).all()
    events = db.scalars(
        select(EventRecord)
        .where(EventRecord.device_id == device_id)
        .order_by(EventRecord.ts_ms.desc())
        .limit(20)
    ).all()
    can_manage = who.can(Permission.MANAGE_DEVICES)
    station = app_state(request).station
    assert station is not None  # create_app builds it
    return render(
        request,
        "device.html",
        d=row,
        commands=device_commands(db, station, device_id) if can_manage else [],
        sent=request.query_params.get("sent") == "1",
        ack_text=ack_text,
        span=span,
        ranges=list(RANGES),
        charts=charts,
        alerts=alerts,
        events=events,
        can_manage=can_manage,
    )
