"""Schema upgrades under the migration lock (controller/db/engine.py): several replicas
starting at once on a fresh database, `xaso controller migrate`, a start that only checks,
and fleet_0002 carrying owed webhooks over. Real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

import controller.db.models  # noqa: F401  (every table on Base.metadata)
from controller.app import create_app
from controller.db.base import Base
from controller.db.engine import (
    MigrationError,
    alembic_config,
    check_schema,
    make_engine,
    migration_lock,
    session_factory,
    upgrade,
)
from controller.db.fleet_tables import WebhookDelivery
from controller.fleet.play_writes import Record, play_row
from controller.settings import load_settings
from protocol.events import PlayFinished, PlayMissed
from tests.auth_helpers import write_config
from tests.fleet import ROOT

REPLICAS = 4


def heads(url: str) -> list[str]:
    return sorted(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def every_revision(url: str) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(url))
    return sorted(rev.revision for rev in script.walk_revisions())


def test_replicas_upgrading_a_fresh_database_at_once_all_succeed_and_migrate_once(
    tmp_path: Path, database_url: str
) -> None:
    go = tmp_path / "go"
    driver = [sys.executable, "-m", "tests.drivers.migrate", database_url]
    procs = [
        subprocess.Popen(
            [*driver, str(tmp_path / f"ready-{i}"), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(REPLICAS)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready-{i}").exists() for i in range(REPLICAS)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "the replicas did not get ready"
            time.sleep(0.05)
        go.touch()  # all of them at once
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * REPLICAS, [err for _, err in outputs]
    applied = [json.loads(out) for out, _ in outputs]
    assert sorted(r for one in applied for r in one) == every_revision(database_url)  # once
    assert sorted(len(one) > 0 for one in applied) == [False] * (REPLICAS - 1) + [True]
    check_schema(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        versions = sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        assert versions == heads(database_url)
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_a_lock_held_too_long_is_a_clear_error(database_url: str) -> None:
    held = pytest.raises(MigrationError, match="held the migration lock for over")
    with migration_lock(database_url), held:
        upgrade(database_url, wait_s=0.3)
    assert sorted(upgrade(database_url)) == every_revision(database_url)  # once it is free


def test_the_lock_lets_the_second_in_only_when_the_first_is_done(database_url: str) -> None:
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait(30)
        with migration_lock(database_url):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with migration_lock(database_url):
        entered.set()
        thread.join(0.5)  # give it every chance to barge in
        order.append("first")
    thread.join(30)
    assert order == ["first", "second"]


def test_xaso_controller_migrate_then_a_start_that_only_checks(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url)
    config.write_text(
        config.read_text().replace("[database]\n", "[database]\nmigrate_at_start = false\n")
    )
    with pytest.raises(MigrationError, match="run `xaso controller migrate"):
        create_app(load_settings(config))
    cli = [sys.executable, "-m", "cli.main", "controller", "migrate", "--config", str(config)]
    first = subprocess.run(cli, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Applied ") and "fleet_0002" in first.stdout
    again = subprocess.run(cli, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.stdout.strip() == "The schema was already the newest."
    app = create_app(load_settings(config))  # at head: it starts
    app.state.xaso.engine.dispose()


def test_a_database_newer_than_the_code_is_refused_by_a_start_that_checks(
    database_url: str,
) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'fleet_0099'"
                          " WHERE version_num LIKE 'fleet_%'"))  # fmt: skip
    engine.dispose()
    with pytest.raises(MigrationError, match="a newer version migrated it"):
        check_schema(database_url)


def test_fleet_0002_queues_the_webhooks_the_old_columns_still_owed(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "fleet_0001")
    engine = make_engine(database_url)
    insert = text(
        "INSERT INTO alerts (kind, device_id, severity, raised_ms, cleared_ms, message_vi,"
        " message_en, details, raise_delivery, clear_delivery, delivery_attempts)"
        " VALUES (:kind, :device, 'critical', 1000, :cleared, 'vi', 'en', '{\"n\": 1}',"
        " :up, :down, 0)"
    )
    with engine.begin() as conn:
        for device, cleared, up, down in (
            ("loa-1", None, "sent", "none"),  # nothing owed
            ("loa-2", None, "sending", "none"),  # claimed by a replica that may have died
            ("loa-3", 2000, "sent", "pending"),
        ):
            conn.execute(
                insert,
                {"kind": "device.offline", "device": device, "cleared": cleared,
                 "up": up, "down": down},
            )  # fmt: skip
    engine.dispose()
    assert "fleet_0002" in upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        owed = [(r.payload["alert"]["device_id"], r.action, r.status) for r in rows]
        assert owed == [("loa-2", "raised", "pending"), ("loa-3", "cleared", "pending")]
        assert rows[1].payload["alert"]["details"] == {"n": 1} and len({r.key for r in rows}) == 2
    engine.dispose()


def test_fleet_0003_moves_the_rollups_into_wide_rows_and_back(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "fleet_0002")
    engine = make_engine(database_url)
    insert = text(
        'INSERT INTO telemetry_rollups (device_id, metric, period_s, bucket_ms, "count",'
        ' "min", "avg", "max") VALUES (:d, :m, :p, :b, :n, :lo, :avg, :hi)'
    )
    keys = ("d", "m", "p", "b", "n", "lo", "avg", "hi")
    narrow = [
        dict(zip(keys, row, strict=True))
        for row in (
            ("loa-1", "cpu_temp_c", 300, 0, 10, 40.1, 45.04, 50.0),
            ("loa-1", "load1", 300, 0, 10, 0.1, 0.257, 1.5),
            ("loa-1", "cpu_temp_c", 3600, 0, 120, 39.0, 44.0, 51.0),
            ("loa-2", "disk_free_mb", 300, 300_000, 9, 1.5, 2.0, 2.5),
        )
    ]
    with engine.begin() as conn:
        conn.execute(insert, narrow)
    engine.dispose()
    assert "fleet_0003_storage" in upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        wide = {
            (r.device_id, r.period_s, r.bucket_ms): r
            for r in conn.execute(text("SELECT * FROM telemetry_rollups"))
        }
        assert set(wide) == {("loa-1", 300, 0), ("loa-1", 3600, 0), ("loa-2", 300, 300_000)}
        five = wide[("loa-1", 300, 0)]
        assert (five.samples, five.cpu_temp_c_min, five.cpu_temp_c_avg, five.cpu_temp_c_max) == (
            10, 401, 450, 500,
        )  # fmt: skip
        assert (five.load1_min, five.load1_avg, five.load1_max, five.rss_mb_avg) == (
            10,
            26,
            150,
            None,
        )
        assert wide[("loa-2", 300, 300_000)].disk_free_mb_avg == 20
        indexes = {i["name"] for i in inspect(conn).get_indexes("telemetry_samples")}
        assert "ix_telemetry_samples_device_received" not in indexes
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()

    command.downgrade(alembic_config(database_url), "fleet_0002")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        back = {
            (r.device_id, r.metric, r.period_s): (r.count, r.min, r.avg, r.max)
            for r in conn.execute(text("SELECT * FROM telemetry_rollups"))
        }
    engine.dispose()
    assert back == {
        ("loa-1", "cpu_temp_c", 300): (10, 40.1, 45.0, 50.0),
        ("loa-1", "load1", 300): (10, 0.1, 0.26, 1.5),
        ("loa-1", "cpu_temp_c", 3600): (120, 39.0, 44.0, 51.0),
        ("loa-2", "disk_free_mb", 300): (9, 1.5, 2.0, 2.5),
    }


def test_the_communes_revisions_leave_every_existing_user_province_wide_and_go_back(
    database_url: str,
) -> None:
    config = alembic_config(database_url)
    for before in ("auth_0001", "fleet_0006_receipts", "broadcast_0003_times"):
        command.upgrade(config, before)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO users (username, display_name, password_hash, role, active, created_ms)"
            " VALUES ('bt', 'Bien Tap', 'x', 'broadcaster', true, 1)"
        ))  # fmt: skip
        conn.execute(text("INSERT INTO devices (id, name, roles, registered, created_ms)"
                          " VALUES ('loa-1', '', '[]', true, 1)"))  # fmt: skip
    engine.dispose()
    applied = upgrade(database_url)
    assert {"auth_0002_communes", "fleet_0007_communes", "broadcast_0004_communes",
            "broadcast_0006_reached"} <= set(applied)  # fmt: skip
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT username, commune FROM users")).all() == [("bt", None)]
        assert conn.execute(text("SELECT id, commune FROM devices")).all() == [("loa-1", None)]
        for table in ("users", "devices", "groups", "broadcasts"):
            names = {i["name"] for i in inspect(conn).get_indexes(table)}
            assert f"ix_{table}_commune" in names
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    for before in ("auth_0001", "fleet_0006_receipts", "broadcast_0003_times"):
        command.downgrade(config, before)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        for table in ("users", "devices", "groups", "broadcasts"):
            assert "commune" not in {c["name"] for c in inspect(conn).get_columns(table)}
        assert conn.execute(text("SELECT username FROM users")).scalars().all() == ["bt"]
    engine.dispose()


def test_the_radio_communes_revisions_leave_every_clip_station_and_entry_the_provinces(
    database_url: str,
) -> None:
    config = alembic_config(database_url)
    for before in ("auth_0002_communes", "broadcast_0004_communes"):
        command.upgrade(config, before)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO clips (sha256, title, duration_ms, format, size_bytes, source, lang,"
            " created_by, created_ms) VALUES (:sha, 'Tin', 1, 'opus', 1, 'upload', 'vi', 'bt', 1)"
        ), {"sha": "a" * 64})  # fmt: skip
        conn.execute(text(
            "INSERT INTO audit_log (at_ms, actor_kind, actor_name, action, target, details, ip)"
            " VALUES (1, 'user', 'bt', 'clip.upload', 'clip:a', '{}', '')"
        ))  # fmt: skip
    engine.dispose()
    applied = upgrade(database_url)
    assert {"auth_0003_audit_communes", "broadcast_0005_communes"} <= set(applied)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT commune FROM clips")).all() == [(None,)]
        assert conn.execute(text("SELECT commune FROM audit_log")).all() == [(None,)]
        for table in ("clips", "relay_stations", "schedules", "audit_log", "clip_shares"):
            names = {i["name"] for i in inspect(conn).get_indexes(table)}
            assert f"ix_{table}_commune" in names
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    for before in ("auth_0002_communes", "broadcast_0004_communes"):
        command.downgrade(config, before)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        for table in ("clips", "relay_stations", "schedules", "audit_log"):
            assert "commune" not in {c["name"] for c in inspect(conn).get_columns(table)}
        assert "clip_shares" not in inspect(conn).get_table_names()
        assert conn.execute(text("SELECT title FROM clips")).scalars().all() == ["Tin"]
    engine.dispose()


def test_bulletin_communes_leave_every_bulletin_the_provinces_and_go_back(
    database_url: str,
) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "broadcast_0006_reached")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO bulletins (source, external_id, title, level, stream_url,"
            " stream_duration_s, lang, targets, received_ms, state, note) VALUES ('stt',"
            " 'BT-1', 'Tin', 'normal', 'https://x.example/a', 60, 'vi', '[]', 1, 'pending', '')"
        ))  # fmt: skip
    engine.dispose()
    assert "broadcast_0007_bulletin_communes" in upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT external_id, commune FROM bulletins")).all() == [
            ("BT-1", None)
        ]
        names = {i["name"] for i in inspect(conn).get_indexes("bulletins")}
        assert "ix_bulletins_commune" in names
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    command.downgrade(config, "broadcast_0006_reached")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert "commune" not in {c["name"] for c in inspect(conn).get_columns("bulletins")}
        assert conn.execute(text("SELECT title FROM bulletins")).scalars().all() == ["Tin"]
    engine.dispose()


def test_webhook_communes_leave_every_delivery_the_provinces_and_go_back(
    database_url: str,
) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "fleet_0007_communes")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO webhook_deliveries (key, alert_id, action, payload, status, attempts,"
            " due_ms, created_ms) VALUES ('k-1', 1, 'raised', '{}', 'pending', 0, 1, 1)"
        ))  # fmt: skip
    engine.dispose()
    assert "fleet_0008_webhook_communes" in upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT key, commune FROM webhook_deliveries")).all()
        assert rows == [("k-1", None)]
        assert "ix_webhook_deliveries_commune" in {
            i["name"] for i in inspect(conn).get_indexes("webhook_deliveries")
        }
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    command.downgrade(config, "fleet_0007_communes")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("webhook_deliveries")}
        assert "commune" not in columns
        assert conn.execute(text("SELECT key FROM webhook_deliveries")).scalars().all() == ["k-1"]
    engine.dispose()


def test_broadcast_0008_leaves_every_bulletin_unproposed_and_goes_back(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "broadcast_0007_bulletin_communes")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO bulletins (source, external_id, title, level, stream_url,"
            " stream_duration_s, lang, targets, received_ms, state, note) VALUES ('stt',"
            " 'BT-1', 'Tin', 'normal', 'https://x.example/a', 60, 'vi', '[]', 1, 'pending', '')"
        ))  # fmt: skip
    engine.dispose()
    assert "broadcast_0008_downward" in upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT external_id, proposed FROM bulletins")).all() == [
            ("BT-1", None)
        ]
        assert "downward_bulletins" in inspect(conn).get_table_names()
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    command.downgrade(config, "broadcast_0007_bulletin_communes")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert "proposed" not in {c["name"] for c in inspect(conn).get_columns("bulletins")}
        assert "downward_bulletins" not in inspect(conn).get_table_names()
        assert conn.execute(text("SELECT title FROM bulletins")).scalars().all() == ["Tin"]
    engine.dispose()


def test_fleet_0009_folds_the_stored_play_records_as_ingest_does_and_goes_back(
    database_url: str,
) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "fleet_0008_webhook_communes")
    play = {"key": "tin@06:30", "origin": "schedule", "priority": 2, "planned_ms": 1000,
            "label": "Bản tin", "actual_ms": 1040, "outcome": "preempted", "played_ms": 200,
            "resumes": True}  # fmt: skip
    rest = play | {"actual_ms": 5000, "outcome": "completed", "played_ms": 800,
                   "resumed_from_ms": 200, "resumes": False}  # fmt: skip
    missed = {"key": "tin@17:00", "planned_ms": 9000, "reason": "device_down"}
    stored = [  # (device, type, ts, body), in the order stored
        ("loa-1", "play.finished", 5800, rest),  # the rest, delivered first
        ("loa-1", "play.finished", 1240, play),
        ("loa-1", "play.missed", 9000, missed),
        ("loa-2", "play.missed", 9000, missed),
        ("loa-2", "play.missed", 9100, {"key": "hong"}),  # a body that does not fit: left out
        ("loa-2", "amp.state", 9000, {"on": True, "reason": "preroll"}),
    ]
    engine = make_engine(database_url)
    with engine.begin() as conn:
        for n, (device, kind, ts, body) in enumerate(stored):
            conn.execute(
                text("INSERT INTO events (device_id, event_id, type, ts_ms, received_ms, body)"
                     " VALUES (:d, :e, :t, :ts, :ts, :b)"),
                {"d": device, "e": f"e{n}", "t": kind, "ts": ts, "b": json.dumps(body)},
            )  # fmt: skip
    engine.dispose()
    assert "fleet_0009_plays" in upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM plays ORDER BY device_id, key")).mappings().all()
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    records = [Record(1240, 2, msgspec.convert(play, PlayFinished)),
               Record(5800, 1, msgspec.convert(rest, PlayFinished))]  # fmt: skip
    assert [dict(r) for r in rows] == [
        play_row("loa-1", "tin@06:30", records),
        play_row("loa-1", "tin@17:00", [Record(9000, 3, msgspec.convert(missed, PlayMissed))]),
        play_row("loa-2", "tin@17:00", [Record(9000, 4, msgspec.convert(missed, PlayMissed))]),
    ]
    assert (rows[0]["result"], rows[0]["played_ms"], rows[0]["placed_ms"]) == (
        "completed",
        1000,
        1000,
    )
    command.downgrade(config, "fleet_0008_webhook_communes")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert "plays" not in inspect(conn).get_table_names()
    engine.dispose()
