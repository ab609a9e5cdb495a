"""Ingest's database side: one batch of validated messages written in one transaction.

Kept apart from controller/fleet/ingest.py (the bus handler, queue and writer
thread) so the SQL can be read, tested and benchmarked without a bus: tests
and reports call ``write_batch`` directly, and the controller's registry sync
(``sync_devices_from_site``) shares the device-row helpers.

A telemetry sample reaches the writer as a `Sample`, a plain tuple of its
columns made by `sample_of` as the sample is validated, not as its model;
an `Item` is every other message (and a sample in tests and tools).

Every write is idempotent (ON CONFLICT DO NOTHING, "not older than" updates)
and takes rows in device order, so several ingest replicas can write the same
devices at once without duplicates or deadlocks on PostgreSQL.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from controller.db.fleet_tables import (
    TELEMETRY_METRICS,
    AckRecord,
    Device,
    DeviceGroup,
    DeviceState,
    EventRecord,
    Group,
    TelemetrySample,
    dialect_insert,
)
from controller.db.raw_rows import RawRows
from controller.fleet.identity_rules import Sighting, remember
from controller.fleet.play_writes import Stored, fold_stored
from controller.site.directory import DeviceEntry, Site
from protocol.errors import ProtocolError
from protocol.events import PrinterStatus, read_body
from protocol.uplink import Ack, Status, Telemetry

AckHook = Callable[[Session, list[tuple[str, Ack]]], None]
"""Given each batch's acks as (device, ack), in the batch's transaction (broadcasts' rows)."""
LAST_SEEN_RESOLUTION_MS = 10_000


class Item(NamedTuple):
    """One validated message; a tuple, since one is made per message on the hot path."""

    device: str
    leaf: str
    msg: Any  # the validated model of controller.fleet.ingest.MODELS[leaf]
    received_ms: int
    payload: bytes | None = None  # as received: the latest telemetry is kept as sent
    done: Any = None  # the bus's ticket (or a callable) that acknowledges it, once committed


Sample = tuple[Any, ...]
"""One telemetry sample until its batch is written: the columns of telemetry_samples
(SAMPLE_KEYS), then what only the latest state takes (S_DISK_PCT, S_SYNCED,
S_OUTBOX), the JSON to keep as that state (S_JSON: the payload as sent, or text
made from the model) and the message's ticket (S_TICKET). Plain values in a plain
tuple, which the garbage collector stops tracking at once: a model is nine objects
that it would walk again and again while thousands wait for their batch."""
S_DISK_PCT, S_SYNCED, S_OUTBOX, S_JSON, S_TICKET = 12, 13, 14, 15, 16


class SeenDevices:
    """The writer's memory of which devices have rows and when last_seen_ms was written.

    A device's rows are ensured once per process (``known``) and its last_seen_ms
    written at most every LAST_SEEN_RESOLUTION_MS, in one UPDATE for the batch's
    devices, so telemetry costs inserts of samples, not a registry write per
    message. The memory is only a shortcut: a replica without it does the
    idempotent writes again.
    """

    def __init__(self) -> None:
        self.written_ms: dict[str, int] = {}
        self.known: set[str] = set()

    def due(self, devices: set[str], now_ms: int) -> set[str]:
        return {
            d
            for d in devices
            if now_ms - self.written_ms.get(d, -LAST_SEEN_RESOLUTION_MS) >= LAST_SEEN_RESOLUTION_MS
        }

    def written(self, devices: set[str], ensured: set[str], now_ms: int) -> None:
        self.written_ms.update(dict.fromkeys(devices, now_ms))
        self.known |= ensured


SAMPLE_KEYS = ("device_id", "ts_ms", "received_ms", *TELEMETRY_METRICS)
# A sample is the device's at its ts: one delivered twice (a broker's redelivery, two
# replicas) is stored once.
INSERT_SAMPLES = RawRows(
    insert(TelemetrySample).values({k: bindparam(k) for k in SAMPLE_KEYS}),
    SAMPLE_KEYS,
    multirow=True,
    suffix="ON CONFLICT (device_id, ts_ms) DO NOTHING",
)
STATE_KEYS = (
    "b_device",
    "b_ts",
    "b_temp",
    "b_disk_mb",
    "b_disk_pct",
    "b_synced",
    "b_offset",
    "b_outbox",
    "b_sample",
    "b_received",
)
# Replicas may write one device's samples out of order: never let an older one win.
UPDATE_LATEST = RawRows(
    update(DeviceState)
    .where(
        DeviceState.device_id == bindparam("b_device"),
        or_(DeviceState.telemetry_ms.is_(None), DeviceState.telemetry_ms <= bindparam("b_ts")),
    )
    .values(
        telemetry_ms=bindparam("b_ts"),
        cpu_temp_c=bindparam("b_temp"),
        disk_free_mb=bindparam("b_disk_mb"),
        disk_free_pct=bindparam("b_disk_pct"),
        clock_synced=bindparam("b_synced"),
        clock_offset_ms=bindparam("b_offset"),
        outbox_len=bindparam("b_outbox"),
        telemetry=bindparam("b_sample"),
        updated_ms=bindparam("b_received"),
    ),
    STATE_KEYS,
)
# A statement per device, compiled once: an UPDATE ... IN built per batch cost twice the
# rest of an idle fleet's batch in SQLAlchemy's statement construction alone.
TOUCH = RawRows(
    update(Device)
    .where(Device.id == bindparam("b_id"))
    .values(
        last_seen_ms=bindparam("b_now"),
        first_seen_ms=func.coalesce(Device.first_seen_ms, bindparam("b_now")),
    ),
    ("b_id", "b_now"),
)


def sample_of(
    device: str, t: Telemetry, received_ms: int, payload: bytes | None = None, ticket: Any = None
) -> Sample:
    """The sample ``t`` (sent as ``payload``) as the writer takes it; the model may go."""
    disk_pct = t.disk_free_pct
    clock = t.clock
    synced = clock.synced
    return (
        device,
        t.ts,
        received_ms,
        t.cpu_temp_c,  # in the order of TELEMETRY_METRICS
        t.load1,
        t.mem_used_pct,
        t.disk_free_mb,
        t.cpu_pct,
        t.rss_mb,
        float(t.outbox_len),
        clock.offset_ms,
        t.network.signal_dbm,
        disk_pct,
        synced if isinstance(synced, bool) else None,
        t.outbox_len,
        _json_source(t, payload),
        ticket,
    )


def write_batch(
    session: Session,
    batch: list[Item],
    now_ms: int,
    touch: set[str] | None = None,
    on_acks: AckHook | None = None,
    *,
    ensure: set[str] | None = None,
    samples: Sequence[Sample] = (),
) -> Counter[str]:
    """Write one batch in the caller's transaction; returns what was stored, by leaf.

    ``samples``: telemetry as `sample_of` makes it, besides any in ``batch``.
    ``touch``: the devices whose last_seen_ms to write (default: all).
    ``ensure``: the devices whose rows to make if missing (default: ``touch``).
    ``on_acks``: given the batch's acks in the same transaction.
    """
    counts: Counter[str] = Counter()
    by_leaf: dict[str, list[Item]] = {"status": [], "telemetry": [], "event": [], "ack": []}
    for item in batch:
        by_leaf[item.leaf].append(item)
    if by_leaf["telemetry"]:
        made = [sample_of(i.device, i.msg, i.received_ms, i.payload) for i in by_leaf["telemetry"]]
        samples = [*samples, *made]
    if touch is None:
        touch = {item.device for item in batch} | {s[0] for s in samples}
    ensure = touch if ensure is None else ensure
    if ensure:
        _ensure_devices(session, ensure, now_ms)
    if touch:
        _touch_devices(session, touch, now_ms)
    for item in by_leaf["status"]:  # in arrival order
        _apply_status(session, item)
        counts["status"] += 1
    counts["telemetry"] = _store_telemetry(session, samples)
    stored, duplicates = _store_events(session, by_leaf["event"])
    counts["event"], counts["duplicate_events"] = stored, duplicates
    counts["ack"] = _store_acks(session, by_leaf["ack"])
    if on_acks is not None and by_leaf["ack"]:
        on_acks(session, [(i.device, i.msg) for i in by_leaf["ack"]])
    return +counts


def _ensure_devices(session: Session, devices: set[str], now_ms: int) -> None:
    """Rows for devices first seen on the wire."""
    ids = sorted(devices)  # one lock order for every replica
    rows = [{"id": d, "registered": False, "first_seen_ms": now_ms} for d in ids]
    session.execute(
        dialect_insert(session, Device)
        .values(name="", roles=[], created_ms=0)
        .on_conflict_do_nothing(index_elements=["id"]),
        rows,
    )
    _ensure_states(session, ids, now_ms)


def _touch_devices(session: Session, devices: set[str], now_ms: int) -> None:
    """Every sender's last_seen_ms, in one executemany."""
    TOUCH.execute(session, [(d, now_ms) for d in sorted(devices)])  # one lock order for all


def _apply_status(session: Session, item: Item) -> None:
    status: Status = item.msg
    row = session.get(DeviceState, item.device, with_for_update=True)
    assert row is not None  # made by _touch_devices
    if row.state != status.state:
        row.state, row.changed_ms = status.state, item.received_ms
    row.status_ts_ms = status.ts
    row.agent = status.agent or row.agent
    row.boot_ms = status.boot
    row.config_version = status.config_version
    row.schedule_version = status.schedule_version
    row.documents = dict(status.documents)
    row.updated_ms = item.received_ms
    if status.state == "online" and status.instance:
        seen = Sighting(status.instance, tuple(status.addresses), item.received_ms, status.ts)
        kept = [Sighting.of(s) for s in row.sightings or []]
        row.sightings = [s.as_json() for s in remember(kept, seen)]
    session.flush()


def _store_telemetry(session: Session, samples: Sequence[Sample]) -> int:
    """All samples in one executemany, then each device's latest in another."""
    if not samples:
        return 0
    latest: dict[str, Sample] = {}
    get = latest.get
    for s in samples:
        known = get(s[0])
        if known is None or s[1] >= known[1]:
            latest[s[0]] = s
    INSERT_SAMPLES.execute(session, samples)  # takes the SAMPLE_KEYS columns of each
    # in one lock order for every replica: two replicas updating the same devices in
    # arrival order deadlock on PostgreSQL (the bench's two processes did)
    UPDATE_LATEST.execute(session, [_state_row(latest[d]) for d in sorted(latest)])
    return len(samples)


def _state_row(s: Sample) -> tuple[Any, ...]:
    text = s[S_JSON]
    return (
        s[0],
        s[1],
        s[3],  # cpu_temp_c
        s[6],  # disk_free_mb
        s[S_DISK_PCT],
        s[S_SYNCED],
        s[10],  # clock offset_ms
        s[S_OUTBOX],
        text.decode() if isinstance(text, bytes) else text,  # validated JSON is UTF-8
        s[2],
    )


def _json_source(msg: Telemetry, payload: bytes | None) -> bytes | str:
    """The sample's JSON: as sent, when it is strict JSON, which the database needs.

    The uplink reads NaN and Infinity (protocol.uplink.read_uplink), which PostgreSQL's
    json type refuses (the whole batch would fail), so a payload with them is written
    with nulls.
    """
    if payload is None:
        return json.dumps(msgspec.to_builtins(msg), ensure_ascii=False)
    if b"NaN" not in payload and b"Infinity" not in payload:
        return payload
    return json.dumps(_finite(json.loads(payload)), ensure_ascii=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _store_events(session: Session, items: list[Item]) -> tuple[int, int]:
    """Insert each (device, event id) once; returns (stored, duplicates)."""
    if not items:
        return 0, 0
    unique: dict[tuple[str, str], Item] = {}
    for i in items:
        unique.setdefault((i.device, i.msg.id), i)
    stmt = (
        dialect_insert(session, EventRecord)
        .on_conflict_do_nothing(index_elements=["device_id", "event_id"])
        .returning(EventRecord.id, EventRecord.device_id, EventRecord.event_id)
    )
    rows = [
        {
            "device_id": i.device,
            "event_id": i.msg.id,
            "type": i.msg.type,
            "ts_ms": i.msg.ts,
            "received_ms": i.received_ms,
            "body": _finite(i.msg.body),  # NaN would fail the whole batch on PostgreSQL
        }
        for i in unique.values()
    ]
    inserted = {(r.device_id, r.event_id): r.id for r in session.execute(stmt, rows)}
    for key in inserted:
        event = unique[key]
        if event.msg.type == "printer.status":
            _apply_printer(session, event)
    fold_stored(  # the play log's rows, in the events' transaction
        session,
        (Stored(d, row, unique[(d, e)].msg.ts, unique[(d, e)].msg.type, unique[(d, e)].msg.body)
         for (d, e), row in inserted.items()),
    )  # fmt: skip
    return len(inserted), len(items) - len(inserted)


def _apply_printer(session: Session, item: Item) -> None:
    """The device's printer state, from a body that fits ``printer.status`` only: a
    misfit one is stored with the events (counted by ingest) but drives no state."""
    try:
        body = read_body(item.msg.type, item.msg.body)
    except ProtocolError:
        return
    assert isinstance(body, PrinterStatus)
    session.execute(
        update(DeviceState)
        .where(
            DeviceState.device_id == item.device,
            or_(DeviceState.printer_ms.is_(None), DeviceState.printer_ms <= item.msg.ts),
        )
        .values(printer=body.wire(), printer_ms=item.msg.ts)
    )


def _store_acks(session: Session, items: list[Item]) -> int:
    if not items:
        return 0
    rows = [
        {
            "device_id": i.device,
            "cmd": i.msg.cmd,
            "ok": i.msg.ok,
            "error": i.msg.error,
            "detail": i.msg.detail,
            "ts_ms": i.msg.ts,
            "received_ms": i.received_ms,
            "result": _finite(i.msg.result),
        }
        for i in items
    ]
    session.execute(
        dialect_insert(session, AckRecord).on_conflict_do_nothing(
            index_elements=["device_id", "cmd", "ts_ms"]
        ),
        rows,
    )
    return len(items)


def sync_devices_from_site(site: Site, session: Session, now_ms: int) -> None:
    """Mirror the site's device registry into devices, groups and device_groups.

    A device removed from the registry keeps its row and history, marked
    ``registered = False``; its group memberships go.
    """
    entries = {d.id: d for d in site.devices()}
    groups = sorted({g for d in entries.values() for g in d.groups})
    if groups:
        session.execute(
            dialect_insert(session, Group)
            .values(name="")
            .on_conflict_do_nothing(index_elements=["id"]),
            [{"id": g} for g in groups],
        )
        for group in session.scalars(select(Group).where(Group.id.in_(groups))):
            group.commune = _group_commune(group.id, entries.values())
    if entries:  # inserted as ingest does: a device first heard meanwhile is no conflict
        session.execute(
            dialect_insert(session, Device)
            .values(name="", roles=[], created_ms=0, registered=True, first_seen_ms=None)
            .on_conflict_do_nothing(index_elements=["id"]),
            [{"id": i} for i in sorted(entries)],
        )
    known = {d.id: d for d in session.scalars(select(Device).with_for_update())}
    for entry in entries.values():
        device = known[entry.id]
        device.name, device.roles = entry.name, list(entry.roles)
        device.registered, device.created_ms = True, entry.created_ms
        device.commune = entry.commune or None
    for gone in set(known) - set(entries):
        known[gone].registered = False
    session.flush()
    session.execute(delete(DeviceGroup))
    links = [{"device_id": d.id, "group_id": g} for d in entries.values() for g in d.groups]
    if links:
        session.execute(dialect_insert(session, DeviceGroup).on_conflict_do_nothing(), links)
    _ensure_states(session, entries, now_ms)


def _group_commune(group: str, entries: Iterable[DeviceEntry]) -> str | None:
    """The one commune of a group's devices; None for "all", the province's, or a mix
    (which the registry refuses, controller/site/communes.py)."""
    if group == "all":
        return None
    found = {d.commune for d in entries if group in d.groups}
    return (found.pop() or None) if len(found) == 1 else None


def _ensure_states(session: Session, devices: Iterable[str], now_ms: int) -> None:
    rows = [{"device_id": d} for d in sorted(devices)]
    if rows:
        session.execute(
            dialect_insert(session, DeviceState)
            .values(agent="", config_version=0, schedule_version=0, documents={}, updated_ms=now_ms)
            .on_conflict_do_nothing(index_elements=["device_id"]),
            rows,
        )
