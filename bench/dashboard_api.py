"""Dashboard API with 10,000 devices: `GET /api/devices` latency over real HTTP.

10,000 devices are inserted straight into the database with a realistic
latest state (most online, some offline or never seen, readings, a printer
on every kiosk, groups of 50, a few hundred open alerts). The controller's
app runs under uvicorn on a local port. In the same run, sequentially from
one client:

1. `GET /healthz` (the app's cheapest route: one `SELECT 1`): the baseline of
   HTTP, middleware and a database round trip;
2. `GET /api/devices` pages of 100, at random offsets and with filters
   (a group, `state=offline`, `state=alerting`), signed in with an API token;
3. the same page queries run directly through `controller.fleet.queries.list_devices`
   (SQLAlchemy, no HTTP).

p50 and p99 of each, and the ratio of the API's p50 to each baseline.

    .venv/bin/python -m bench.dashboard_api [--db URL | --postgres] [--requests 400]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import insert

from cli.brokers.mosquitto import free_port
from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.db.fleet_tables import Alert, Device, DeviceGroup, DeviceState, Group
from controller.fleet.queries import DeviceQuery, list_devices
from controller.settings import load_settings

DEVICES = 10_000
CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"


def populate(sessions: Any, now_ms: int, rng: random.Random) -> None:
    devices, states, links, alerts = [], [], [], []
    for i in range(DEVICES):
        did = f"loa-{i:05d}" if i % 20 else f"kiosk-{i:05d}"
        kiosk = did.startswith("kiosk")
        role = "kiosk" if kiosk else "speaker"
        fate = rng.random()
        seen = None if fate < 0.01 else now_ms - (3_600_000 if fate < 0.06 else 20_000)
        state = None if seen is None else ("offline" if fate < 0.06 else "online")
        devices.append(
            {"id": did, "name": f"Cụm loa thôn {i // 50}", "roles": [role],
             "registered": True, "created_ms": now_ms - 86_400_000, "first_seen_ms": seen,
             "last_seen_ms": seen}
        )  # fmt: skip
        telemetry = {"uptime_s": 3600, "cpu_temp_c": 50.0, "amplifier": {"on": not kiosk}}
        states.append(
            {"device_id": did, "state": state,
             "changed_ms": seen, "agent": "0.1.0", "config_version": 1, "schedule_version": 3,
             "documents": {}, "telemetry_ms": seen, "cpu_temp_c": 40 + rng.random() * 30,
             "disk_free_mb": 1000 + rng.random() * 20000, "clock_synced": fate > 0.02,
             "clock_offset_ms": rng.random() * 5, "outbox_len": 0, "telemetry": telemetry,
             "printer": {"paper": "ok", "cover": "closed"} if kiosk else None,
             "updated_ms": now_ms}
        )  # fmt: skip
        links += [
            {"device_id": did, "group_id": f"thon-{i // 50}"},
            {"device_id": did, "group_id": "all"},
        ]
        if fate < 0.06:
            alerts.append(
                {"kind": "device.offline", "device_id": did, "severity": "critical",
                 "raised_ms": now_ms - 600_000, "message_vi": f"Thiết bị {did} mất kết nối",
                 "message_en": f"Device {did} offline", "details": {}}
            )  # fmt: skip
    groups = [{"id": g, "name": g} for g in {link["group_id"] for link in links}]
    with sessions.begin() as db:
        for model, rows in ((Device, devices), (DeviceState, states), (Group, groups),
                            (DeviceGroup, links), (Alert, alerts)):  # fmt: skip
            for start in range(0, len(rows), 2000):
                db.execute(insert(model), rows[start : start + 2000])


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def timed(n: int, call: Callable[[int], None]) -> list[float]:
    for i in range(20):  # warm-up
        call(i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def queries(rng: random.Random, n: int) -> list[dict[str, Any]]:
    shapes: list[dict[str, Any]] = [
        {"offset": rng.randrange(0, DEVICES - 100)},
        {"group": f"thon-{rng.randrange(200)}"},
        {"state": "offline"},
        {"state": "alerting", "offset": 100},
    ]
    return [
        shapes[i % 4] | ({"offset": rng.randrange(0, DEVICES - 100)} if i % 4 == 0 else {})
        for i in range(n)
    ]


def run(db_url: str, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "controller.toml"
        port = free_port()
        config.write_text(
            f'{CHEAP}[database]\nurl = "{db_url}"\n[mqtt]\nport = 9\n', encoding="utf-8"
        )
        app = create_app(load_settings(config))
        state = app.state.xaso
        now = state.now_ms()
        rng = random.Random(7)
        populate(state.sessions, now, rng)
        with state.sessions() as db:
            user = create_user(db, state.auth.passwords, username="bench", display_name="Bench",
                               role="admin", password="mat-khau-bench", now_ms=now)  # fmt: skip
            owner = Principal(
                "user", user.id, "bench", "Bench", Role.ADMIN, PERMISSIONS[Role.ADMIN]
            )
            token, _ = create_token(db, owner, "bench", "admin", now)
            db.commit()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        shapes = queries(rng, requests)
        try:
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30
            ) as client:

                def api(i: int) -> None:
                    r = client.get("/api/devices", params=shapes[i % len(shapes)])
                    assert r.status_code == 200 and r.json()["total"] > 0, r.text

                def health(_i: int) -> None:
                    assert client.get("/healthz").status_code == 200

                base = timed(requests, health)
                served = timed(requests, api)
            off = int(state.settings.alerts.offline_after_min * 60_000)

            def direct(i: int) -> None:
                with state.sessions() as db:
                    list_devices(db, state.now_ms(), off, DeviceQuery(**shapes[i % len(shapes)]))

            sql = timed(requests, direct)
        finally:
            server.should_exit = True
            thread.join(10)
            state.engine.dispose()
    dialect = db_url.split(":", 1)[0]
    (b50, b99), (a50, a99), (s50, s99) = percentiles(base), percentiles(served), percentiles(sql)
    print(f"{dialect}: {DEVICES} devices, {requests} requests each, pages of 100")
    print(f"  GET /healthz            p50 {b50:6.2f} ms  p99 {b99:6.2f} ms")
    print(f"  GET /api/devices        p50 {a50:6.2f} ms  p99 {a99:6.2f} ms")
    print(f"  list_devices (no HTTP)  p50 {s50:6.2f} ms  p99 {s99:6.2f} ms")
    print(f"  ratio api/healthz p50 {a50 / b50:.1f}  api/direct p50 {a50 / s50:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="", help="a database URL (default: a temp SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    # the app's own warnings (600 alerts raised, no broker for the station) are not the figures
    logging.getLogger("controller").setLevel(logging.ERROR)
    if args.postgres:
        from tests.postgres import PostgresCluster

        cluster = PostgresCluster().start()
        try:
            run(cluster.create_database(), args.requests)
        finally:
            cluster.stop()
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(args.db or f"sqlite:///{tmp}/bench.db", args.requests)


if __name__ == "__main__":
    main()
