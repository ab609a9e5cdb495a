"""Retention and downsampling of what ingest stores, run periodically by the controller.

Any replica may run it, and several at once: buckets are recomputed from the raw
samples and upserted, and raw samples are only deleted once every period has
rolled them up (docs/controller-data.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from controller.db.engine import SQLITE_INCREMENTAL
from controller.db.fleet_tables import (
    ROLLUP_SCALE,
    ROLLUP_STATS,
    TELEMETRY_METRICS,
    AckRecord,
    Device,
    RollupProgress,
    TelemetryRollup,
    TelemetrySample,
    dialect_insert,
    rollup_column,
)

ROLLUP_PERIODS_S = (300, 3600)
ROLLUP_GRACE_MS = 60_000  # samples still in flight when a bucket closes
ROLLUP_CHUNK_MS = 6 * 3600_000  # catch up a long gap in pieces, not one huge GROUP BY
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Retention:
    """Days kept: raw samples, roll-ups by period (s), acks. About 4 MiB a device on
    SQLite at 30 s telemetry (docs/benchmarks.md, "Telemetry storage")."""

    raw_days: int = 7
    # 5 min for the 24 h chart and two weeks back, 1 h for the 7 d chart and two years
    rollup_days: dict[int, int] = field(default_factory=lambda: {300: 14, 3600: 730})
    ack_days: int = 90


def maintain(session: Session, now_ms: int, retention: Retention | None = None) -> dict[str, int]:
    """Roll closed buckets up, then delete what is past its retention; returns counts.
    Then, once committed, ``reclaim`` the space.

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
        rollup = TelemetryRollup.__table__.c
        done[f"rollups_{period_s}s_deleted"] = _deleted(
            session,
            # by device, on the primary key (device, period, bucket): no scan of the table
            delete(TelemetryRollup).where(
                rollup.device_id.in_(select(Device.id)),
                rollup.period_s == period_s,
                rollup.bucket_ms < now_ms - days * DAY_MS,
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
    aggregates = [agg(c) for c in columns for agg in (func.min, func.avg, func.max)]
    query = (
        select(TelemetrySample.device_id, bucket, func.count(), *aggregates)
        .where(TelemetrySample.received_ms >= start, TelemetrySample.received_ms < stop)
        .group_by(TelemetrySample.device_id, bucket)
    )
    names = [rollup_column(m, stat) for m in TELEMETRY_METRICS for stat in ROLLUP_STATS]
    scales = [ROLLUP_SCALE[m] for m in TELEMETRY_METRICS for _ in ROLLUP_STATS]
    rows = [
        {
            "device_id": device_id,
            "period_s": period_s,
            "bucket_ms": int(bucket_ms),
            "samples": samples,
            **{
                name: None if value is None else round(float(value) * scale)
                for name, value, scale in zip(names, values, scales, strict=True)
            },
        }
        for device_id, bucket_ms, samples, *values in session.execute(query)
    ]
    if rows:
        insert = dialect_insert(session, TelemetryRollup)
        session.execute(
            insert.on_conflict_do_update(
                index_elements=["device_id", "period_s", "bucket_ms"],
                set_={c: insert.excluded[c] for c in ("samples", *names)},
            ),
            rows,
        )
    return len(rows)


def reclaim(engine: Engine) -> int:
    """Give the pages that pruning freed back to the file system (SQLite); returns them.

    After ``maintain`` has committed. Only a file made with auto_vacuum=INCREMENTAL
    can (controller/db/engine.py makes every new one so and converts an old one
    once, at upgrade); elsewhere this does nothing. PostgreSQL's autovacuum
    reuses the space in place.
    """
    if engine.dialect.name != "sqlite":
        return 0
    with engine.connect() as conn:
        if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != SQLITE_INCREMENTAL:
            return 0
        free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
        conn.rollback()  # nothing open: the script runs on its own
        # Python's sqlite3 steps a statement once, and each step frees one page; a
        # script is stepped to its end.
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.executescript("PRAGMA incremental_vacuum;")
        return free
