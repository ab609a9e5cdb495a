"""Telemetry storage: bytes per device per day, and at the shipped retention's steady state.

Time is simulated, not waited for: day by day, each device's samples of that
day (one every ``--interval`` s, values on the agent's own resolution) are
inserted with ingest's own statement, then ``rollups.maintain`` runs at the
day's end as the controller does, rolling up, pruning and reclaiming. After
the longest retention has passed, the database holds what a controller holds
for ever after: that is the steady state. The size is the file's pages in
use (SQLite: page_count - freelist_count; PostgreSQL: pg_total_relation_size
of the fleet's telemetry tables), divided by the devices.

    .venv/bin/python -m bench.storage [--devices 2] [--days 731] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import Device
from controller.fleet.ingest_writes import INSERT_SAMPLES
from controller.fleet.rollups import DAY_MS, Retention, maintain, reclaim
from controller.settings import TelemetrySection

T0_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIB = 1024 * 1024
TABLES = ("telemetry_samples", "telemetry_rollups")


def _samples(devices: list[str], day: int, interval_ms: int, rng: random.Random) -> list[tuple]:
    """One day of samples per device, in the order of ingest_writes.SAMPLE_KEYS."""
    rows = []
    for n, device in enumerate(devices):
        temp, load, mem = 45.0 + n, 0.3, 40.0
        for t in range(T0_MS + day * DAY_MS, T0_MS + (day + 1) * DAY_MS, interval_ms):
            temp = min(85.0, max(30.0, temp + rng.uniform(-0.3, 0.3)))
            load = max(0.0, load + rng.uniform(-0.05, 0.05))
            mem = min(95.0, max(5.0, mem + rng.uniform(-0.2, 0.2)))
            rows.append(
                (
                    device,
                    t - rng.randint(0, 400),  # the device's clock
                    t,
                    round(temp, 1),  # cpu_temp_c, as edge/health.py rounds each
                    round(load, 2),  # load1
                    round(mem, 1),  # mem_used_pct
                    round(20_000.0 - day * 5 - rng.random(), 1),  # disk_free_mb
                    round(rng.uniform(0.5, 8.0), 1),  # cpu_pct
                    round(rng.uniform(47.0, 52.0), 1),  # rss_mb
                    0.0,  # outbox_len
                    round(rng.uniform(-5.0, 5.0), 3),  # clock_offset_ms
                    None,  # signal_dbm: wired
                )
            )
    return rows


def _used_bytes(engine: Engine) -> tuple[int, int]:
    """(bytes in use, bytes of the file or relations) of the telemetry."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
            return (pages - free) * size, pages * size
        total = sum(
            conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar_one()
            for t in TABLES
        )
        return total, total


def _by_table(engine: Engine, devices: int) -> list[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":  # the dbstat table: pages of each b-tree
            rows = conn.exec_driver_sql(
                "SELECT name, SUM(pgsize), SUM(unused) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ).all()
            return [
                f"{name} {size / devices / MIB:.2f} MiB ({unused / size:.0%} unused)"
                for name, size, unused in rows
                if "telemetry" in name
            ]
        else:
            rows = conn.execute(
                text(
                    "SELECT relname, pg_relation_size(oid) FROM pg_class"
                    " WHERE relname LIKE '%telemetry%'"
                    " ORDER BY 2 DESC"
                )
            ).all()
    return [f"{name} {size / devices / MIB:.2f} MiB" for name, size in rows]


def run(url: str, devices: int, days: int, interval_s: float, retention: Retention) -> None:
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    ids = [f"spk-bench-{n:04d}" for n in range(devices)]
    rng = random.Random(16)
    interval_ms = int(interval_s * 1000)
    longest = max(retention.raw_days, *retention.rollup_days.values())
    marks = sorted({1, retention.raw_days + 1, *(d + 1 for d in retention.rollup_days.values())})
    with sessions.begin() as session:  # as ingest makes them: roll-ups are pruned by device
        session.add_all(Device(id=d, registered=False) for d in ids)
    started = time.monotonic()
    print(
        f"{engine.dialect.name}: {devices} devices, one sample every {interval_s:g} s, "
        f"{days} simulated days; retention raw {retention.raw_days} d, "
        + ", ".join(f"{p // 60} min roll-ups {d} d" for p, d in retention.rollup_days.items())
    )
    print(f"{'day':>5} {'in use':>12} {'file':>12} {'per device':>12} {'per device/day':>15}")
    for day in range(days):
        with sessions.begin() as session:
            INSERT_SAMPLES.execute(session, _samples(ids, day, interval_ms, rng))
        with sessions.begin() as session:
            maintain(session, T0_MS + (day + 1) * DAY_MS, retention)
        reclaim(engine)
        if day + 1 in marks or day + 1 == days:
            used, whole = _used_bytes(engine)
            print(
                f"{day + 1:>5} {used / MIB:>8.2f} MiB {whole / MIB:>8.2f} MiB "
                f"{used / devices / MIB:>8.2f} MiB {used / devices / (day + 1) / 1024:>11.1f} KiB"
            )
    used, whole = _used_bytes(engine)
    print("per device, by table and index: " + ", ".join(_by_table(engine, devices)))
    state = "steady state" if days > longest else f"not yet steady (needs {longest + 1} days)"
    print(
        f"per device at day {days} ({state}): {used / devices / MIB:.2f} MiB in use, "
        f"file {whole / devices / MIB:.2f} MiB; "
        f"simulated in {time.monotonic() - started:.0f} s, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    engine.dispose()


@contextmanager
def _database(postgres: bool, tmp: str) -> Iterator[str]:
    if postgres:
        from tests.postgres import PostgresCluster  # the suite's private cluster, on a free port

        cluster = PostgresCluster().start()
        try:
            yield cluster.create_database()
        finally:
            cluster.stop()
    else:
        yield f"sqlite:///{Path(tmp) / 'controller.db'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--days", type=int, default=0, help="default: the longest retention + 1")
    parser.add_argument("--interval", type=float, default=30.0, help="telemetry every N s")
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    args = parser.parse_args()
    retention = Retention(raw_days=TelemetrySection().retention_days)  # as the controller ships
    days = args.days or max(retention.raw_days, *retention.rollup_days.values()) + 1
    with (
        tempfile.TemporaryDirectory(prefix="xaso-bench-") as tmp,
        _database(args.postgres, tmp) as url,
    ):
        run(url, args.devices, days, args.interval, retention)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
