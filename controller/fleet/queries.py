"""What the dashboard and the device page read: a fixed number of queries per page.

A page of the device list is one SELECT over devices LEFT JOIN device_state
(the filters, the online/offline decision and the ordering all in SQL, paged
on the primary key), then one SELECT each for the page's groups, open
alerts, resend memory (by `device_id IN (...)`) and the last signed documents
of the page's topics (by `topic IN (...)`): five queries whatever the page
size, never one per device. Counting the filtered total is a sixth. Which
documents a device is behind on, controller/fleet/behind_rules.py decides.
Health charts read `telemetry_rollups` on its primary key (device, period,
bucket): one wide row per bucket holds every metric.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Select, Text, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from controller.db.broadcast_tables import PublishedDocumentRow
from controller.db.fleet_tables import (
    ROLLUP_SCALE,
    ROLLUP_STATS,
    Alert,
    BehindDevice,
    Device,
    DeviceGroup,
    DeviceState,
    TelemetryRollup,
    rollup_column,
)
from controller.fleet.alert_rules import printer_state
from controller.fleet.behind_rules import (
    Behind,
    behind,
    expected_topics,
    held_documents,
)
from protocol.topics import Topics

StateFilter = Literal["online", "offline", "unknown", "alerting"]
CHART_METRICS = (
    "cpu_temp_c",
    "load1",
    "cpu_pct",
    "mem_used_pct",
    "disk_free_mb",
    "signal_dbm",
    "clock_offset_ms",
)
RANGES: dict[str, tuple[int, int]] = {  # name: (span, roll-up period), in ms and s
    "24h": (24 * 3600_000, 300),
    "7d": (7 * 24 * 3600_000, 3600),
}


@dataclass(frozen=True)
class DeviceQuery:
    group: str = ""
    state: StateFilter | None = None
    role: str = ""
    q: str = ""  # the start of the id or of the name
    id: str = ""  # exactly this device
    commune: str | None = None  # a commune's devices only; None: every device (the province)
    limit: int = 100
    offset: int = 0


@dataclass
class DeviceRow:
    id: str
    name: str
    roles: list[str]
    registered: bool
    state: str  # online | offline | unknown (never heard from)
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
    groups: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # kinds of the open alerts
    behind: list[Behind] = field(default_factory=list)  # documents it holds an older one of
    behind_since_ms: int | None = None  # when the resender first saw it behind
    resends: int = 0  # sent again automatically since
    resent_ms: int | None = None


def _state_expr(now_ms: int, offline_after_ms: int) -> Any:
    """Online: heard from within the offline limit and not said offline since; as the rules."""
    recent = Device.last_seen_ms >= now_ms - offline_after_ms
    return case(
        (Device.last_seen_ms.is_(None), "unknown"),
        (and_(recent, func.coalesce(DeviceState.state, "online") == "online"), "online"),
        else_="offline",
    )


def _filtered(stmt: Select[Any], f: DeviceQuery, state: Any, *, join: bool = True) -> Select[Any]:
    stmt = stmt.select_from(Device)
    if join:
        stmt = stmt.outerjoin(DeviceState, DeviceState.device_id == Device.id)
    if f.group:
        # IN (the group's members, by the group_id index): a group of 50 reads 50 links,
        # where a correlated EXISTS probed the links once for each of 10,000 devices
        members = select(DeviceGroup.device_id).where(DeviceGroup.group_id == f.group)
        stmt = stmt.where(Device.id.in_(members))
    if f.role:
        # roles is a short JSON list; the quoted name cannot match a longer role's name.
        stmt = stmt.where(cast(Device.roles, Text).contains(f'"{f.role}"'))
    if f.id:
        stmt = stmt.where(Device.id == f.id)
    if f.commune is not None:
        stmt = stmt.where(Device.commune == f.commune)
    if f.q:
        stmt = stmt.where(or_(Device.id.startswith(f.q), Device.name.startswith(f.q)))
    if f.state == "alerting":
        # IN (open alerts' devices): the few open alerts are read once, not once per device
        open_alerts = select(Alert.device_id).where(Alert.cleared_ms.is_(None))
        stmt = stmt.where(Device.id.in_(open_alerts))
    elif f.state is not None:
        stmt = stmt.where(state == f.state)
    return stmt


def list_devices(
    session: Session,
    now_ms: int,
    offline_after_ms: int,
    f: DeviceQuery,
    topics: Topics | None = None,
) -> tuple[int, list[DeviceRow]]:
    """The filtered total and one page of devices, ordered by id; with ``topics`` (the
    site's root), the documents each is behind on."""
    state = _state_expr(now_ms, offline_after_ms)
    # The page's ids first, from the primary key's index alone unless the filter is on the
    # state: a page at offset 9,900 skips 9,900 index entries, not 9,900 joined rows.
    needs_state = f.state in ("online", "offline", "unknown")
    # Core execution (the session's connection): these are rows of columns, and the ORM's
    # statement compilation and loading cost a shared dashboard page a third of its time
    conn = session.connection()
    total = conn.scalar(_filtered(select(func.count()), f, state, join=needs_state)) or 0
    columns = (
        Device.id,
        Device.name,
        Device.roles,
        Device.registered,
        state.label("state"),
        Device.last_seen_ms,
        DeviceState.agent,
        DeviceState.cpu_temp_c,
        DeviceState.disk_free_mb,
        DeviceState.disk_free_pct,
        DeviceState.clock_synced,
        DeviceState.clock_offset_ms,
        DeviceState.telemetry,
        DeviceState.printer,
        DeviceState.documents,
        DeviceState.status_ts_ms,
        DeviceState.telemetry_ms,
    )
    page = _filtered(select(Device.id), f, state, join=needs_state)
    page = page.order_by(Device.id).limit(f.limit).offset(f.offset)
    stmt = _filtered(select(*columns), DeviceQuery(), state).where(Device.id.in_(page))
    found = conn.execute(stmt.order_by(Device.id)).all()
    rows = [_row(r) for r in found]
    _attach(conn, rows)
    if topics is not None:
        _attach_behind(session, rows, {r.id: _held(r) for r in found}, topics)
    return total, rows


def get_device(
    session: Session,
    now_ms: int,
    offline_after_ms: int,
    device_id: str,
    topics: Topics | None = None,
    *,
    commune: str | None = None,
) -> DeviceRow | None:
    """The device, if it is within ``commune`` (None: any)."""
    one = DeviceQuery(id=device_id, limit=1, commune=commune)
    _, rows = list_devices(session, now_ms, offline_after_ms, one, topics)
    return rows[0] if rows else None


def _held(r: Any) -> dict[str, int]:
    sample = r.telemetry if isinstance(r.telemetry, dict) else {}
    return held_documents(r.documents, r.status_ts_ms, sample.get("documents"), r.telemetry_ms)


def _row(r: Any) -> DeviceRow:
    telemetry = r.telemetry or {}
    amp = telemetry.get("amplifier") if isinstance(telemetry, dict) else None
    printer = r.printer or {}
    return DeviceRow(
        id=r.id,
        name=r.name or "",
        roles=list(r.roles or []),
        registered=bool(r.registered),
        state=r.state,
        last_seen_ms=r.last_seen_ms,
        agent=r.agent or "",
        cpu_temp_c=r.cpu_temp_c,
        disk_free_mb=r.disk_free_mb,
        disk_free_pct=r.disk_free_pct,
        clock_synced=r.clock_synced,
        clock_offset_ms=r.clock_offset_ms,
        amplifier_on=amp.get("on") if isinstance(amp, dict) else None,
        # a printer that does not answer has no paper reading (older agents said "ok")
        printer_paper="unknown"
        if printer and printer_state(printer) in ("offline", "error")
        else printer.get("paper"),
        printer_cover=printer.get("cover"),
    )


def _attach(conn: Connection, rows: list[DeviceRow]) -> None:
    """The page's groups and open alerts: one query each, by id."""
    if not rows:
        return
    by_id = {r.id: r for r in rows}
    ids = list(by_id)
    links = select(DeviceGroup.device_id, DeviceGroup.group_id).where(
        DeviceGroup.device_id.in_(ids)
    )
    for device_id, group_id in conn.execute(links.order_by(DeviceGroup.group_id)):
        by_id[device_id].groups.append(group_id)
    alerts = select(Alert.device_id, Alert.kind).where(
        Alert.cleared_ms.is_(None), Alert.device_id.in_(ids)
    )
    for device_id, kind in conn.execute(alerts.order_by(Alert.kind)):
        by_id[device_id].alerts.append(kind)


def _attach_behind(
    session: Session, rows: list[DeviceRow], held: dict[str, dict[str, int]], topics: Topics
) -> None:
    """The documents each device of the page holds an older version of, and its resends."""
    if not rows:
        return
    expected = {r.id: expected_topics(topics, r.id, r.groups) for r in rows}
    wanted = sorted({t for ts in expected.values() for t in ts})
    docs = PublishedDocumentRow
    versions = select(docs.topic, docs.version).where(docs.topic.in_(wanted))
    published: dict[str, int] = {t: v for t, v in session.execute(versions)}
    memory = {
        m.device_id: m
        for m in session.scalars(
            select(BehindDevice).where(BehindDevice.device_id.in_(list(expected)))
        )
    }
    for r in rows:
        r.behind = behind(expected[r.id], held[r.id], published)
        known = memory.get(r.id)
        if known is not None:
            r.behind_since_ms = known.since_ms
            r.resends, r.resent_ms = known.resends, known.resent_ms


def state_counts(
    session: Session, now_ms: int, offline_after_ms: int, commune: str | None = None
) -> dict[str, int]:
    """How many devices are online, offline, unknown, and have an open alert (of
    ``commune``; None: of every commune)."""
    state = _state_expr(now_ms, offline_after_ms).label("state")
    stmt = (
        select(state, func.count())
        .select_from(Device)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .group_by(state)
    )
    alerting = select(func.count(func.distinct(Alert.device_id))).where(Alert.cleared_ms.is_(None))
    if commune is not None:
        stmt = stmt.where(Device.commune == commune)
        alerting = alerting.where(Alert.device_id.in_(in_commune(commune)))
    counts = {"online": 0, "offline": 0, "unknown": 0}
    counts.update({s: n for s, n in session.execute(stmt)})
    counts["alerting"] = session.scalar(alerting) or 0
    return counts


def in_commune(commune: str) -> Select[Any]:
    """The ids of a commune's devices, for ``.in_()`` (devices.commune is indexed)."""
    return select(Device.id).where(Device.commune == commune)


def group_ids(session: Session, commune: str | None = None) -> list[str]:
    """The groups in use; a commune's: those of its devices, never "all" (the province)."""
    if commune is None:
        return list(session.scalars(select(DeviceGroup.group_id).distinct().order_by("group_id")))
    mine = (
        select(DeviceGroup.group_id)
        .where(DeviceGroup.device_id.in_(in_commune(commune)), DeviceGroup.group_id != "all")
        .distinct()
        .order_by("group_id")
    )
    return list(session.scalars(mine))


@dataclass(frozen=True)
class Point:
    bucket_ms: int
    min: float
    avg: float
    max: float


def health_series(
    session: Session, device_id: str, now_ms: int, span: str
) -> dict[str, list[Point]]:
    """min/avg/max per bucket of each charted metric over the span (24h: 5 min, 7d: 1 h)."""
    span_ms, period_s = RANGES[span]
    r = TelemetryRollup.__table__.c
    stmt = (
        select(
            r.bucket_ms,
            *(r[rollup_column(m, stat)] for m in CHART_METRICS for stat in ROLLUP_STATS),
        )
        .where(r.device_id == device_id, r.period_s == period_s, r.bucket_ms >= now_ms - span_ms)
        .order_by(r.bucket_ms)
    )
    series: dict[str, list[Point]] = defaultdict(list)
    for bucket, *values in session.execute(stmt):
        for n, metric in enumerate(CHART_METRICS):
            lo, avg, hi = values[3 * n : 3 * n + 3]
            if avg is not None:
                scale = ROLLUP_SCALE[metric]
                series[metric].append(Point(bucket, lo / scale, avg / scale, hi / scale))
    return {m: series[m] for m in CHART_METRICS if series.get(m)}
