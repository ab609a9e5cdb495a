"""The fleet's tables: devices and groups, their latest state, telemetry, events, acks, alerts
and the queue of their webhook deliveries.

Times are UTC epoch milliseconds (BIGINT), as on the wire. ``*_ms`` columns
stamped by the controller (``received_ms``, ``changed_ms``) use its own
clock; ``ts_ms`` is what the device said. The high-volume tables (samples,
events, acks) carry ``device_id`` without a foreign key: a message is stored
even if it races its device's registry row, and ingest pays no lookup.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from controller.db.base import Base

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
RowId = BigInteger().with_variant(Integer, "sqlite")
ID = String(48)  # protocol.topics.ID_PATTERN

# The numeric telemetry fields kept per sample (as columns) and rolled up.
TELEMETRY_METRICS = (
    "cpu_temp_c",
    "load1",
    "mem_used_pct",
    "disk_free_mb",
    "cpu_pct",
    "rss_mb",
    "outbox_len",
    "clock_offset_ms",
    "signal_dbm",
)


class Device(Base):
    """A device of the site registry (``registered``) or one seen on the wire only."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    registered: Mapped[bool] = mapped_column(Boolean, default=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)
    # its commune in the registry (None: the province's, or a site without communes), so
    # that a commune's pages and APIs filter in SQL (controller/auth/tenancy.py)
    commune: Mapped[str | None] = mapped_column(ID, index=True)


class Group(Base):
    """A village, a zone or "all": what group commands and schedules address."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # the commune of its devices (the registry refuses a group spanning two); None for
    # "all" and for a group of the province's devices
    commune: Mapped[str | None] = mapped_column(ID, index=True)


class DeviceGroup(Base):
    __tablename__ = "device_groups"

    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(
        ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class DeviceState(Base):
    """The latest of each device: one row, overwritten by ingest."""

    __tablename__ = "device_state"

    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str | None] = mapped_column(String(8))  # online | offline
    changed_ms: Mapped[int | None] = mapped_column(BigInteger)  # when `state` last changed
    status_ts_ms: Mapped[int | None] = mapped_column(BigInteger)
    agent: Mapped[str] = mapped_column(String(64), default="")
    boot_ms: Mapped[int | None] = mapped_column(BigInteger)
    config_version: Mapped[int] = mapped_column(BigInteger, default=0)
    schedule_version: Mapped[int] = mapped_column(BigInteger, default=0)
    documents: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    telemetry_ms: Mapped[int | None] = mapped_column(BigInteger)  # received, controller clock
    cpu_temp_c: Mapped[float | None] = mapped_column(Float)
    disk_free_mb: Mapped[float | None] = mapped_column(Float)
    disk_free_pct: Mapped[float | None] = mapped_column(Float)
    clock_synced: Mapped[bool | None] = mapped_column(Boolean)  # None: the device cannot tell
    clock_offset_ms: Mapped[float | None] = mapped_column(Float)
    outbox_len: Mapped[int | None] = mapped_column(Integer)
    telemetry: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the whole latest sample
    printer: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # latest printer.status body
    printer_ms: Mapped[int | None] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    # the latest `online` statuses (controller/fleet/identity_rules.py): a clone's turns
    sightings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class BehindDevice(Base):
    """A device found holding an older document than the controller sent; deleted once it
    holds the current ones (controller/radio/resends.py)."""

    __tablename__ = "behind_devices"

    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    since_ms: Mapped[int] = mapped_column(BigInteger)  # first seen behind (controller clock)
    resent_ms: Mapped[int | None] = mapped_column(BigInteger)
    resends: Mapped[int] = mapped_column(Integer, default=0)


class TelemetrySample(Base):
    """One telemetry message at full resolution; deleted after the raw retention.

    Read only by time (roll-ups, pruning), so its one index for reading is
    ``received_ms``: a second on ``(device_id, received_ms)`` cost a third of the
    table's bytes. ``(device_id, ts_ms)`` is unique, which costs as much, so that
    a sample delivered twice is stored once (docs/delivery.md).
    """

    __tablename__ = "telemetry_samples"
    __table_args__ = (Index("ux_telemetry_samples_sample", "device_id", "ts_ms", unique=True),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ID)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float)
    load1: Mapped[float | None] = mapped_column(Float)
    mem_used_pct: Mapped[float | None] = mapped_column(Float)
    disk_free_mb: Mapped[float | None] = mapped_column(Float)
    cpu_pct: Mapped[float | None] = mapped_column(Float)
    rss_mb: Mapped[float | None] = mapped_column(Float)
    outbox_len: Mapped[float | None] = mapped_column(Float)
    clock_offset_ms: Mapped[float | None] = mapped_column(Float)
    signal_dbm: Mapped[float | None] = mapped_column(Float)


# Roll-ups keep each metric in integer steps of 1/scale of its unit, finer than
# edge/health.py rounds it (or as fine, for the averages): SQLite stores a small
# integer in 1-3 bytes where a REAL always takes 8.
ROLLUP_SCALE = {
    "cpu_temp_c": 10,
    "load1": 100,
    "mem_used_pct": 10,
    "disk_free_mb": 10,
    "cpu_pct": 10,
    "rss_mb": 10,
    "outbox_len": 1,
    "clock_offset_ms": 10,
    "signal_dbm": 1,
}
ROLLUP_STATS = ("min", "avg", "max")


def rollup_column(metric: str, stat: str) -> str:
    return f"{metric}_{stat}"


def _rollup_columns() -> list[Column[Any]]:
    return [
        Column(rollup_column(m, stat), BigInteger, nullable=True)
        for m in TELEMETRY_METRICS
        for stat in ROLLUP_STATS
    ]


class TelemetryRollup(Base):
    """One device's min/avg/max of every metric over one bucket (5 min or 1 h).

    One wide row per (device, period, bucket), the primary key being the table
    itself on SQLite (WITHOUT ROWID): a row per metric and a separate key index
    made roll-ups nine-tenths of the database. Values are integers of
    ``1 / ROLLUP_SCALE[metric]``; null where no sample of the bucket had the metric.
    """

    __table__ = Table(
        "telemetry_rollups",
        Base.metadata,
        Column("device_id", ID, primary_key=True),
        Column("period_s", Integer, primary_key=True),
        Column("bucket_ms", BigInteger, primary_key=True),
        Column("samples", Integer, nullable=False),
        *_rollup_columns(),
        sqlite_with_rowid=False,
    )


class RollupProgress(Base):
    """Up to where (exclusive, controller clock) each period has been rolled up."""

    __tablename__ = "rollup_progress"

    period_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    done_until_ms: Mapped[int] = mapped_column(BigInteger)


class EventRecord(Base):
    """An edge event, stored once per (device, event id) however often it is delivered."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("device_id", "event_id", name="uq_events_device_event"),
        Index("ix_events_type_ts", "type", "ts_ms"),
        Index("ix_events_device_ts", "device_id", "ts_ms"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ID)
    event_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PlayFold(Base):
    """One play on one cluster (a request's records on one device, by its ``key``), its
    records folded by ingest as they come (controller/fleet/play_writes.py), so that the
    play log selects, orders and pages in SQL (controller/fleet/play_log.py).

    ``placed_ms`` (its planned start, or its first record's ts) is what the log selects
    by, ``order_ms`` (planned, else its first sample, else 0) what it orders by; the
    records' span (``first_ts_ms``, ``last_ts_ms``) finds them again when another one
    of the play comes in."""

    __tablename__ = "plays"
    __table_args__ = (
        Index("ix_plays_placed", "placed_ms"),
        Index("ix_plays_device_placed", "device_id", "placed_ms"),
    )

    device_id: Mapped[str] = mapped_column(ID, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    placed_ms: Mapped[int] = mapped_column(BigInteger)
    order_ms: Mapped[int] = mapped_column(BigInteger)
    first_ts_ms: Mapped[int] = mapped_column(BigInteger)
    last_ts_ms: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str] = mapped_column(String(200), default="")
    item_id: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int | None] = mapped_column(Integer)
    planned_ms: Mapped[int | None] = mapped_column(BigInteger)
    actual_ms: Mapped[int | None] = mapped_column(BigInteger)
    played_ms: Mapped[int] = mapped_column(BigInteger)
    result: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64), default="")
    relayed_ms: Mapped[int | None] = mapped_column(BigInteger)
    gaps: Mapped[int] = mapped_column(Integer, default=0)
    gap_ms: Mapped[int] = mapped_column(BigInteger, default=0)


class AckRecord(Base):
    """A device's answer to a command; a redelivered ack is stored once."""

    __tablename__ = "acks"
    __table_args__ = (
        UniqueConstraint("device_id", "cmd", "ts_ms", name="uq_acks_device_cmd_ts"),
        Index("ix_acks_cmd", "cmd"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ID)
    cmd: Mapped[str | None] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Alert(Base):
    """A raised alert; at most one open (uncleared) row per (kind, device)."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alerts_open",
            "kind",
            "device_id",
            unique=True,
            sqlite_where=text("cleared_ms IS NULL"),
            postgresql_where=text("cleared_ms IS NULL"),
        ),
        Index("ix_alerts_raised", "raised_ms"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(ID)
    severity: Mapped[str] = mapped_column(String(8))  # warning | critical
    raised_ms: Mapped[int] = mapped_column(BigInteger)
    cleared_ms: Mapped[int | None] = mapped_column(BigInteger)
    message_vi: Mapped[str] = mapped_column(Text)
    message_en: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookDelivery(Base):
    """One webhook POST owed for an alert's raise or clear (controller/fleet/webhooks.py).

    Queued in the transaction that raises or clears the alert. ``lease`` and
    ``leased_until_ms`` say which sender holds it, so one replica posts it at a
    time. No foreign key to ``alerts``: rebuilding that table (SQLite's way to
    alter one) must not cascade into the queue.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "due_ms"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(36), unique=True)  # the Idempotency-Key header
    alert_id: Mapped[int] = mapped_column(BigInteger, index=True)
    action: Mapped[str] = mapped_column(String(8))  # raised | cleared
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the body, as of the change
    status: Mapped[str] = mapped_column(String(8), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # counted when claimed
    due_ms: Mapped[int] = mapped_column(BigInteger)  # not before: the backoff
    lease: Mapped[str | None] = mapped_column(String(32))  # the holding sender's claim token
    leased_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    done_ms: Mapped[int | None] = mapped_column(BigInteger)  # sent, or given up
    last_error: Mapped[str | None] = mapped_column(Text)
    # whose receiver: a commune's webhook (its devices' alerts only), None the province's
    commune: Mapped[str | None] = mapped_column(ID, index=True)


class UpwardRecord(Base):
    """One body owed to the province's source-information system (controller/fleet/upward.py):
    a cluster's status ping or a play's log record, sent in ``id`` order."""

    __tablename__ = "upward_records"
    __table_args__ = (Index("ix_upward_records_due", "status", "id"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))  # ping | play
    dedupe: Mapped[str] = mapped_column(String(200), unique=True)  # queued once
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(8), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    done_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)


class UpwardCursor(Base):
    """How far the producer has read a source (``events``: event_records ids), and when the
    last pings were queued; one row per name, moved compare-and-set by one replica."""

    __tablename__ = "upward_cursors"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)


def dialect_insert(session: Session, model: type[Base]) -> Any:
    """The dialect's INSERT (PostgreSQL or SQLite): both take ``on_conflict_do_*``."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)
