"""Ingest: what devices send up, validated and written to the database in batches.

The Bus's worker parses and validates each message (a bad one is counted and
logged, never stored) and queues it; one writer thread drains the queue into
one transaction per batch, so throughput grows with load instead of paying a
commit per message. Under load the writer commits at most every
BATCH_INTERVAL_S, so each device's latest state is written once per batch,
not once per message.

Several ingest processes may run at once. Telemetry, events and acks come
through a shared subscription (``$share/<group>/...``): each message reaches
one replica. Events are inserted with ON CONFLICT DO NOTHING on (device,
event id), so a redelivery, or the same event reaching two replicas after a
broker restart, is stored once. Status messages are few and order matters
(online, then the Will's offline), so every replica subscribes to all of
them, unshared, and applies them in order; the writes are idempotent.

Retention and downsampling are in controller/rollups.py.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from sqlalchemy import Dialect, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from controller.bus import Bus
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
from controller.provisioning import Site
from protocol.errors import ProtocolError
from protocol.topics import Topics
from protocol.uplink import Ack, Event, Status, Telemetry

log = logging.getLogger(__name__)

Clock = Callable[[], int]
AckHook = Callable[[Session, list[tuple[str, Ack]]], None]
"""Given each batch's acks as (device, ack), in the batch's transaction (broadcasts' rows)."""
SHARED_LEAVES = ("telemetry", "event", "ack")
MODELS: dict[str, type[BaseModel]] = {
    "status": Status,
    "telemetry": Telemetry,
    "event": Event,
    "ack": Ack,
}
BATCH_MAX = 5000
BATCH_INTERVAL_S = 0.25  # under load, at most 4 commits a second; an idle writer commits at once
LAST_SEEN_RESOLUTION_MS = 10_000
WRITE_RETRIES = 5
MAX_PENDING = 4 * BATCH_MAX  # messages validated but not yet written, before the bus waits
TOPIC_CACHE = 50_000  # parsed topics kept; cleared when full (a flood of odd topics)
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


class Item(NamedTuple):
    """One validated message; a tuple, since one is made per message on the hot path."""

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
        batch_interval_s: float = BATCH_INTERVAL_S,
        max_pending: int = MAX_PENDING,
        on_acks: AckHook | None = None,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.topics = topics or Topics()
        self.share_group = share_group
        self.clock = clock
        self.batch_max = batch_max
        self.batch_interval_s = batch_interval_s
        self.max_pending = max_pending
        self.on_acks = on_acks
        self.stats = IngestStats()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._seen = SeenDevices()
        self._routes: dict[str, tuple[str, str, type[BaseModel]]] = {}

    def subscribe(self) -> None:
        """Register the subscriptions on the bus (before or after ``bus.start()``)."""
        for leaf in ("status", *SHARED_LEAVES):
            topic_filter = self.topics.all_devices(leaf)
            if self.share_group and leaf in SHARED_LEAVES:
                topic_filter = f"$share/{self.share_group}/{topic_filter}"
            self.bus.subscribe(topic_filter, self.handle)

    def start(self) -> None:
        self.start_writer()
        self.subscribe()

    def start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()

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
            device, leaf, model = self._routes.get(topic) or self._route(topic)
            # model_validate_json without its Python wrapper: parsed and checked in pydantic-core
            msg = model.__pydantic_validator__.validate_json(payload)
        except (ProtocolError, KeyError, ValueError, ValidationError) as exc:
            self._bad(topic, exc)
            return
        with self._idle:
            # Backpressure when the database falls behind: the bus's worker waits here,
            # its bounded queue fills and paho stops reading, instead of memory growing.
            self._idle.wait_for(lambda: self._pending < self.max_pending)
            self._pending += 1
        self._queue.put(Item(device, leaf, msg, self.clock(), payload))

    def _route(self, topic: str) -> tuple[str, str, type[BaseModel]]:
        """Parse a topic once: devices send on the same few topics all the time."""
        ref = self.topics.parse(topic)
        route = (ref.id, ref.leaf, MODELS[ref.leaf])
        if len(self._routes) >= TOPIC_CACHE:
            self._routes.clear()
        self._routes[topic] = route
        return route

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
        last_commit, backlog = 0.0, False
        while not stopping:
            item = self._queue.get()  # idle: wait for the first message, and write it at once
            # Under load, let a batch gather for BATCH_INTERVAL_S since the last commit: each
            # device's state is then written once for many samples, and sleeping (rather
            # than waking per message) leaves the GIL to the threads that read and validate.
            # After a full batch there is a backlog: no pause, or the interval would cap the rate.
            pause = last_commit + self.batch_interval_s - time.monotonic()
            # An ack has someone waiting on it (an operator's broadcast): no pause.
            if pause > 0 and not backlog and getattr(item, "leaf", "") != "ack":
                time.sleep(pause)
            batch: list[Item] = []
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self.batch_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                last_commit, backlog = time.monotonic(), len(batch) >= self.batch_max
                self._write_with_retries(batch)

    def _write_with_retries(self, batch: list[Item]) -> None:
        for attempt in range(1, WRITE_RETRIES + 1):
            now = self.clock()
            # a status always marks its device seen: the offline rule counts from it
            statuses = {item.device for item in batch if item.leaf == "status"}
            touch = self._seen.due({item.device for item in batch}, now) | statuses
            try:
                with self.sessions.begin() as session:
                    counts = write_batch(session, batch, now, touch, self.on_acks)
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


class RawRows:
    """A Core statement compiled once per dialect, run with plain DBAPI rows.

    For the per-message statements (samples, latest telemetry): SQLAlchemy's
    per-row parameter processing costs more than the database's own insert.
    ``keys`` names the tuple positions; values go to the driver as they are,
    so each must already be what the column takes (JSON as its text).

    ``multirow``: an INSERT is sent as one statement for many rows instead of
    one per row: ``VALUES (...), (...)`` of up to MULTIROW rows on SQLite (one
    step, one GIL release per chunk), one array per column through
    ``unnest`` on PostgreSQL (psycopg splits a long query text in Python).
    """

    def __init__(self, stmt: ClauseElement, keys: Sequence[str], *, multirow: bool = False) -> None:
        self.stmt = stmt
        self.keys = tuple(keys)
        self.multirow = multirow
        self._compiled: dict[str, tuple[str, Callable[[tuple[Any, ...]], Any]]] = {}

    def _compile(self, dialect: Dialect) -> tuple[str, Callable[[tuple[Any, ...]], Any]]:
        key = f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}"
        compiled = self._compiled.get(key)
        if compiled is None:
            done = self.stmt.compile(dialect=dialect, for_executemany=True)  # no RETURNING
            assert isinstance(done, SQLCompiler)
            if done.positional:  # "?" (SQLite)
                sql, names = done.string, list(done.positiontup or ())
            elif dialect.paramstyle == "pyformat":  # "%(name)s" (psycopg): made positional
                sql, names = _NAMED.sub("%s", done.string), _NAMED.findall(done.string)
            else:
                raise NotImplementedError(f"paramstyle {dialect.paramstyle}")
            order = [self.keys.index(n) for n in names]
            # a tuple of those positions, in C
            pick = itemgetter(*order) if len(order) > 1 else lambda r: (r[order[0]],)
            compiled = self._compiled[key] = (sql, pick)
        return compiled

    def execute(self, session: Session, rows: list[tuple[Any, ...]]) -> None:
        conn = session.connection()
        if self.multirow and conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                self._unnest(conn.dialect), tuple(map(list, zip(*rows, strict=True)))
            )
            return
        sql, pick = self._compile(conn.dialect)
        if not self.multirow:
            conn.exec_driver_sql(sql, [pick(r) for r in rows])
            return
        head, values = sql.split(" VALUES ", 1)
        for start in range(0, len(rows), MULTIROW):
            chunk = rows[start : start + MULTIROW]
            params = tuple(chain.from_iterable(map(pick, chunk)))
            conn.exec_driver_sql(f"{head} VALUES {', '.join([values] * len(chunk))}", params)

    def _unnest(self, dialect: Dialect) -> str:
        """PostgreSQL: one INSERT ... SELECT FROM unnest(one array per column)."""
        table = self.stmt.table  # type: ignore[attr-defined]
        casts = ", ".join(f"%s::{table.c[k].type.compile(dialect)}[]" for k in self.keys)
        names = ", ".join(self.keys)  # from the table's metadata, never from input
        return f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({casts})"  # noqa: S608


_NAMED = re.compile(r"%\((\w+)\)s")
MULTIROW = 500  # rows per INSERT statement: 6,000 parameters, well under every limit


SAMPLE_KEYS = ("device_id", "ts_ms", "received_ms", *TELEMETRY_METRICS)
INSERT_SAMPLES = RawRows(
    insert(TelemetrySample).values({k: bindparam(k) for k in SAMPLE_KEYS}),
    SAMPLE_KEYS,
    multirow=True,
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


def write_batch(
    session: Session,
    batch: list[Item],
    now_ms: int,
    touch: set[str] | None = None,
    on_acks: AckHook | None = None,
) -> Counter[str]:
    """Write one batch in the caller's transaction; returns what was stored, by leaf.

    ``touch``: the devices whose rows and last_seen_ms to write (default: all).
    ``on_acks``: given the batch's acks in the same transaction.
    """
    counts: Counter[str] = Counter()
    by_leaf: dict[str, list[Item]] = {"status": [], "telemetry": [], "event": [], "ack": []}
    for item in batch:
        by_leaf[item.leaf].append(item)
    touch = {item.device for item in batch} if touch is None else touch
    if touch:
        _touch_devices(session, touch, now_ms)
    for item in by_leaf["status"]:  # in arrival order
        _apply_status(session, item)
        counts["status"] += 1
    counts["telemetry"] = _store_telemetry(session, by_leaf["telemetry"])
    stored, duplicates = _store_events(session, by_leaf["event"])
    counts["event"], counts["duplicate_events"] = stored, duplicates
    counts["ack"] = _store_acks(session, by_leaf["ack"])
    if on_acks is not None and by_leaf["ack"]:
        on_acks(session, [(i.device, i.msg) for i in by_leaf["ack"]])
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


def _store_telemetry(session: Session, items: list[Item]) -> int:
    """All samples in one executemany, then each device's latest in another."""
    if not items:
        return 0
    rows = []
    latest: dict[str, Item] = {}
    for i in items:
        t: Telemetry = i.msg
        rows.append(
            (
                i.device,
                t.ts,
                i.received_ms,
                t.cpu_temp_c,  # in the order of TELEMETRY_METRICS
                t.load1,
                t.mem_used_pct,
                t.disk_free_mb,
                t.cpu_pct,
                t.rss_mb,
                float(t.outbox_len),
                t.clock.offset_ms,
                t.network.signal_dbm,
            )
        )
        known = latest.get(i.device)
        if known is None or t.ts >= known.msg.ts:
            latest[i.device] = i
    INSERT_SAMPLES.execute(session, rows)
    # in one lock order for every replica: two replicas updating the same devices in
    # arrival order deadlock on PostgreSQL (the bench's two processes did)
    UPDATE_LATEST.execute(session, [_state_row(latest[d]) for d in sorted(latest)])
    return len(items)


def _state_row(item: Item) -> tuple[Any, ...]:
    t: Telemetry = item.msg
    extra = t.model_extra or {}
    disk_pct = extra.get("disk_free_pct")
    return (
        item.device,
        t.ts,
        t.cpu_temp_c,
        t.disk_free_mb,
        float(disk_pct) if isinstance(disk_pct, int | float) else None,
        t.clock.synced if isinstance(t.clock.synced, bool) else None,
        t.clock.offset_ms,
        t.outbox_len,
        _json_text(t, item.payload),
        item.received_ms,
    )


def _json_text(msg: BaseModel, payload: bytes | None) -> str:
    """The sample as JSON text: as sent when it is strict JSON, which the database needs.

    pydantic accepts NaN and Infinity, which PostgreSQL's json type refuses (the
    whole batch would fail), so a payload with them is written with nulls.
    """
    if payload is not None and b"NaN" not in payload and b"Infinity" not in payload:
        try:
            return payload.decode()
        except UnicodeDecodeError:
            pass
    return json.dumps(_finite(msg.model_dump(mode="python")), ensure_ascii=False)


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
        .returning(EventRecord.device_id, EventRecord.event_id)
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
