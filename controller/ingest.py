"""Ingest: what devices send up, validated and written to the database in batches.

The Bus's worker parses and validates each message (a bad one is counted and
logged, never stored) and queues it; one writer thread drains the queue into
one transaction per batch, so throughput grows with load instead of paying a
commit per message.

Several ingest processes may run at once. Telemetry, events and acks come
through a shared subscription (``$share/<group>/...``): each message reaches
one replica. Events are inserted with ON CONFLICT DO NOTHING on (device,
event id), so a redelivery, or the same event reaching two replicas after a
broker restart, is stored once. Status messages are few and order matters
(online, then the Will's offline), so every replica subscribes to all of
them, unshared, and applies them in order; the writes are idempotent.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from controller.bus import Bus
from controller.db.fleet_tables import (
    TELEMETRY_METRICS,
    AckRecord,
    Device,
    DeviceGroup,
    DeviceState,
    EventRecord,
    Group,
    RollupProgress,
    TelemetryRollup,
    TelemetrySample,
    dialect_insert,
)
from controller.provisioning import Site
from protocol.errors import ProtocolError
from protocol.topics import Topics
from protocol.uplink import Ack, Event, Status, Telemetry

log = logging.getLogger(__name__)

Clock = Callable[[], int]
SHARED_LEAVES = ("telemetry", "event", "ack")
MODELS: dict[str, type[BaseModel]] = {
    "status": Status,
    "telemetry": Telemetry,
    "event": Event,
    "ack": Ack,
}
BATCH_MAX = 2000
LAST_SEEN_RESOLUTION_MS = 10_000
WRITE_RETRIES = 5
_STOP = object()


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class IngestStats:
    """Counters since start; ``bad`` by leaf, so an operator sees what is malformed."""

    received: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    stored: Counter[str] = field(default_factory=Counter)
    duplicate_events: int = 0
    batches: int = 0
    dropped: int = 0  # messages of batches the database refused WRITE_RETRIES times


@dataclass(frozen=True)
class Item:
    device: str
    leaf: str
    msg: Any  # the validated model of MODELS[leaf]
    received_ms: int
    payload: bytes | None = None  # as received: the latest telemetry is kept as sent


class Ingest:
    """Subscribes to every device's uplink and writes it to the database."""

    def __init__(
        self,
        bus: Bus,
        sessions: sessionmaker[Session],
        topics: Topics | None = None,
        *,
        share_group: str | None = "ingest",
        clock: Clock = wall_ms,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.topics = topics or Topics()
        self.share_group = share_group
        self.clock = clock
        self.batch_max = batch_max
        self.stats = IngestStats()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._seen = SeenDevices()

    def subscribe(self) -> None:
        """Register the subscriptions on the bus (before or after ``bus.start()``)."""
        for leaf in ("status", *SHARED_LEAVES):
            topic_filter = self.topics.all_devices(leaf)
            if self.share_group and leaf in SHARED_LEAVES:
                topic_filter = f"$share/{self.share_group}/{topic_filter}"
            self.bus.subscribe(topic_filter, self.handle)

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()
        self.subscribe()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(30)
            self._writer = None

    def wait_idle(self, timeout_s: float = 30) -> bool:
        """True once every message handed over so far is written (or dropped)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def handle(self, topic: str, payload: bytes) -> None:
        """The bus handler: parse, validate, queue. Never raises."""
        with self._lock:
            self.stats.received += 1
        try:
            ref = self.topics.parse(topic)
            model = MODELS[ref.leaf]
            msg = model.model_validate_json(payload)  # parsed and checked in pydantic-core
        except (ProtocolError, KeyError, ValueError, ValidationError) as exc:
            self._bad(topic, exc)
            return
        with self._lock:
            self._pending += 1
        self._queue.put(Item(ref.id, ref.leaf, msg, self.clock(), payload))

    def _bad(self, topic: str, exc: Exception) -> None:
        leaf = topic.rsplit("/", 1)[-1]
        with self._lock:
            self.stats.bad[leaf] += 1
            count = self.stats.bad[leaf]
        if count <= 20 or count % 1000 == 0:  # a flood of bad messages must not flood the log
            log.warning("bad message #%d on %s: %s", count, topic, str(exc).splitlines()[0])

    # the writer thread

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[Item] = []
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self.batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            if batch:
                self._write_with_retries(batch)

    def _write_with_retries(self, batch: list[Item]) -> None:
        for attempt in range(1, WRITE_RETRIES + 1):
            now = self.clock()
            # a status always marks its device seen: the offline rule counts from it
            statuses = {item.device for item in batch if item.leaf == "status"}
            touch = self._seen.due({item.device for item in batch}, now) | statuses
            try:
                with self.sessions.begin() as session:
                    counts = write_batch(session, batch, now, touch)
                self._seen.written(touch, now)  # only once committed
                break
            except Exception:
                log.exception("writing %d messages failed (attempt %d)", len(batch), attempt)
                time.sleep(min(5.0, 0.2 * 2**attempt))
        else:
            counts = Counter({"dropped": len(batch)})
        with self._idle:
            self.stats.batches += 1
            self.stats.dropped += counts.pop("dropped", 0)
            self.stats.duplicate_events += counts.pop("duplicate_events", 0)
            self.stats.stored.update(counts)
            self._pending -= len(batch)
            self._idle.notify_all()


class SeenDevices:
    """The writer's memory of which devices have rows and when last_seen_ms was written.

    A device's rows are ensured once per process and its last_seen_ms written at
    most every LAST_SEEN_RESOLUTION_MS, so a flood of telemetry costs inserts
    of samples, not a registry write per message. The memory is only a
    shortcut: a replica without it does the idempotent writes again.
    """

    def __init__(self) -> None:
        self.written_ms: dict[str, int] = {}

    def due(self, devices: set[str], now_ms: int) -> set[str]:
        return {
            d
            for d in devices
            if now_ms - self.written_ms.get(d, -LAST_SEEN_RESOLUTION_MS) >= LAST_SEEN_RESOLUTION_MS
        }

    def written(self, devices: set[str], now_ms: int) -> None:
        self.written_ms.update(dict.fromkeys(devices, now_ms))


def write_batch(
    session: Session, batch: list[Item], now_ms: int, touch: set[str] | None = None
) -> Counter[str]:
    """Write one batch in the caller's transaction; returns what was stored, by leaf.

    ``touch``: the devices whose rows and last_seen_ms to write (default: all).
    """
    counts: Counter[str] = Counter()
    by_leaf: dict[str, list[Item]] = {}
    for item in batch:
        by_leaf.setdefault(item.leaf, []).append(item)
    touch = {item.device for item in batch} if touch is None else touch
    if touch:
        _touch_devices(session, touch, now_ms)
    for item in by_leaf.get("status", []):  # in arrival order
        _apply_status(session, item)
        counts["status"] += 1
    counts["telemetry"] = _store_telemetry(session, by_leaf.get("telemetry", []))
    stored, duplicates = _store_events(session, by_leaf.get("event", []))
    counts["event"], counts["duplicate_events"] = stored, duplicates
    counts["ack"] = _store_acks(session, by_leaf.get("ack", []))
    return +counts


def _touch_devices(session: Session, devices: set[str], now_ms: int) -> None:
    """Rows for devices first seen on the wire, and every sender's last_seen_ms."""
    ids = sorted(devices)  # one lock order for every replica
    rows = [{"id": d, "registered": False, "first_seen_ms": now_ms} for d in ids]
    session.execute(
        dialect_insert(session, Device)
        .values(name="", roles=[], created_ms=0)
        .on_conflict_do_nothing(index_elements=["id"]),
        rows,
    )
    _ensure_states(session, ids, now_ms)
    session.execute(
        update(Device)
        .where(Device.id.in_(ids))
        .values(last_seen_ms=now_ms, first_seen_ms=func.coalesce(Device.first_seen_ms, now_ms))
    )


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
    session.flush()


def _metrics(t: Telemetry) -> dict[str, float | None]:
    return {
        "cpu_temp_c": t.cpu_temp_c,
        "load1": t.load1,
        "mem_used_pct": t.mem_used_pct,
        "disk_free_mb": t.disk_free_mb,
        "cpu_pct": t.cpu_pct,
        "rss_mb": t.rss_mb,
        "outbox_len": float(t.outbox_len),
        "clock_offset_ms": t.clock.offset_ms,
        "signal_dbm": t.network.signal_dbm,
    }


def _store_telemetry(session: Session, items: list[Item]) -> int:
    if not items:
        return 0
    session.execute(
        dialect_insert(session, TelemetrySample),
        [
            {"device_id": i.device, "ts_ms": i.msg.ts, "received_ms": i.received_ms}
            | _metrics(i.msg)
            for i in items
        ],
    )
    latest: dict[str, Item] = {}
    for i in items:
        if i.device not in latest or i.msg.ts >= latest[i.device].msg.ts:
            latest[i.device] = i
    # Replicas may write one device's samples out of order: never let an older one win.
    stmt = (
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
        )
    )
    session.connection().execute(stmt, [_state_params(i) for i in latest.values()])
    return len(items)


def _state_params(item: Item) -> dict[str, Any]:
    t: Telemetry = item.msg
    extra = t.model_extra or {}
    disk_pct = extra.get("disk_free_pct")
    return {
        "b_device": item.device,
        "b_ts": t.ts,
        "b_temp": t.cpu_temp_c,
        "b_disk_mb": t.disk_free_mb,
        "b_disk_pct": float(disk_pct) if isinstance(disk_pct, int | float) else None,
        "b_synced": t.clock.synced if isinstance(t.clock.synced, bool) else None,
        "b_offset": t.clock.offset_ms,
        "b_outbox": t.outbox_len,
        "b_sample": t.model_dump(mode="json") if item.payload is None else json.loads(item.payload),
        "b_received": item.received_ms,
    }


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
        .returning(EventRecord.device_id, EventRecord.event_id)
    )
    rows = [
        {
            "device_id": i.device,
            "event_id": i.msg.id,
            "type": i.msg.type,
            "ts_ms": i.msg.ts,
            "received_ms": i.received_ms,
            "body": i.msg.body,
        }
        for i in unique.values()
    ]
    inserted = {(r.device_id, r.event_id) for r in session.execute(stmt, rows)}
    for key in inserted:
        event = unique[key]
        if event.msg.type == "printer.status":
            _apply_printer(session, event)
    return len(inserted), len(items) - len(inserted)


def _apply_printer(session: Session, item: Item) -> None:
    session.execute(
        update(DeviceState)
        .where(
            DeviceState.device_id == item.device,
            or_(DeviceState.printer_ms.is_(None), DeviceState.printer_ms <= item.msg.ts),
        )
        .values(printer=item.msg.body, printer_ms=item.msg.ts)
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
            "result": i.msg.result,
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
    known = {d.id: d for d in session.scalars(select(Device).with_for_update())}
    for entry in entries.values():
        device = known.get(entry.id)
        if device is None:
            device = Device(id=entry.id, first_seen_ms=None)
            session.add(device)
        device.name, device.roles = entry.name, list(entry.roles)
        device.registered, device.created_ms = True, entry.created_ms
    for gone in set(known) - set(entries):
        known[gone].registered = False
    session.flush()
    session.execute(delete(DeviceGroup))
    links = [{"device_id": d.id, "group_id": g} for d in entries.values() for g in d.groups]
    if links:
        session.execute(dialect_insert(session, DeviceGroup).on_conflict_do_nothing(), links)
    _ensure_states(session, entries, now_ms)


def _ensure_states(session: Session, devices: Iterable[str], now_ms: int) -> None:
    rows = [{"device_id": d} for d in sorted(devices)]
    if rows:
        session.execute(
            dialect_insert(session, DeviceState)
            .values(agent="", config_version=0, schedule_version=0, documents={}, updated_ms=now_ms)
            .on_conflict_do_nothing(index_elements=["device_id"]),
            rows,
        )


# Retention and downsampling, run periodically by the controller (any replica, any number).

ROLLUP_PERIODS_S = (300, 3600)
ROLLUP_GRACE_MS = 60_000  # samples still in flight when a bucket closes
ROLLUP_CHUNK_MS = 6 * 3600_000  # catch up a long gap in pieces, not one huge GROUP BY
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Retention:
    raw_days: int = 7
    rollup_days: dict[int, int] = field(default_factory=lambda: {300: 90, 3600: 730})
    ack_days: int = 90


def maintain(session: Session, now_ms: int, retention: Retention | None = None) -> dict[str, int]:
    """Roll closed buckets up, then delete what is past its retention; returns counts.

    Idempotent and safe to run from several replicas at once: buckets are
    recomputed from raw samples and upserted, and raw samples are only deleted
    once every period has rolled them up.
    """
    retention = retention or Retention()
    done: dict[str, int] = {}
    rolled_until = []
    for period_s in ROLLUP_PERIODS_S:
        done[f"rollups_{period_s}s"], until = _roll_up(session, period_s, now_ms)
        rolled_until.append(until)
    raw_cutoff = min([now_ms - retention.raw_days * DAY_MS, *rolled_until])
    done["samples_deleted"] = _deleted(
        session, delete(TelemetrySample).where(TelemetrySample.received_ms < raw_cutoff)
    )
    for period_s, days in retention.rollup_days.items():
        done[f"rollups_{period_s}s_deleted"] = _deleted(
            session,
            delete(TelemetryRollup).where(
                TelemetryRollup.period_s == period_s,
                TelemetryRollup.bucket_ms < now_ms - days * DAY_MS,
            ),
        )
    done["acks_deleted"] = _deleted(
        session,
        delete(AckRecord).where(AckRecord.received_ms < now_ms - retention.ack_days * DAY_MS),
    )
    return done


def _deleted(session: Session, stmt: Any) -> int:
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def _roll_up(session: Session, period_s: int, now_ms: int) -> tuple[int, int]:
    """Roll every closed bucket since the last run; returns (rows upserted, done until)."""
    period_ms = period_s * 1000
    end = (now_ms - ROLLUP_GRACE_MS) // period_ms * period_ms
    progress = session.get(RollupProgress, period_s)
    if progress is None:
        oldest = session.scalar(select(func.min(TelemetrySample.received_ms)))
        start = end if oldest is None else oldest // period_ms * period_ms
        session.execute(
            dialect_insert(session, RollupProgress)
            .values(period_s=period_s, done_until_ms=start)
            .on_conflict_do_nothing(index_elements=["period_s"])
        )
        progress = session.get(RollupProgress, period_s)
        assert progress is not None
    written = 0
    start = progress.done_until_ms
    while start < end:
        stop = min(end, start + max(period_ms, ROLLUP_CHUNK_MS // period_ms * period_ms))
        written += _roll_range(session, period_s, start, stop)
        start = stop
    progress.done_until_ms = max(progress.done_until_ms, end)
    session.flush()
    return written, progress.done_until_ms


def _roll_range(session: Session, period_s: int, start: int, stop: int) -> int:
    period_ms = period_s * 1000
    bucket = (TelemetrySample.received_ms // period_ms * period_ms).label("bucket")
    columns = [getattr(TelemetrySample, m) for m in TELEMETRY_METRICS]
    aggregates = [agg(c) for c in columns for agg in (func.count, func.min, func.avg, func.max)]
    query = (
        select(TelemetrySample.device_id, bucket, *aggregates)
        .where(TelemetrySample.received_ms >= start, TelemetrySample.received_ms < stop)
        .group_by(TelemetrySample.device_id, bucket)
    )
    rows = []
    for device_id, bucket_ms, *values in session.execute(query):
        for n, metric in enumerate(TELEMETRY_METRICS):
            count, low, mean, high = values[4 * n : 4 * n + 4]
            if count:
                rows.append(
                    {
                        "device_id": device_id,
                        "metric": metric,
                        "period_s": period_s,
                        "bucket_ms": int(bucket_ms),
                        "count": count,
                        "min": low,
                        "avg": float(mean),
                        "max": high,
                    }
                )
    if rows:
        insert = dialect_insert(session, TelemetryRollup)
        session.execute(
            insert.on_conflict_do_update(
                index_elements=["device_id", "metric", "period_s", "bucket_ms"],
                set_={c: insert.excluded[c] for c in ("count", "min", "avg", "max")},
            ),
            rows,
        )
    return len(rows)
