"""Dashboard with 10,000 devices: `GET /api/devices` and the dashboard page under concurrency.

10,000 devices are inserted straight into the database with a realistic
latest state (most online, some offline or never seen, readings, a printer
on every kiosk, groups of 50, a few hundred open alerts). The controller's
app runs under uvicorn on a local port, in a thread of this process, which
then only waits; with ``--workers N`` above 1, as the real `xaso controller`
with ``[http] workers = N`` (a parent and N worker processes on the one port,
controller/serving.py), started once the database is filled. ``--workers 1,2``
runs each in turn, on a database of its own, so the baseline is in the same
run. The clients are processes of their own (as browsers are),
each one httpx client making its requests one after another, all starting
together: 1, 4 and 8 of them at once, on

1. `GET /healthz` (the app's cheapest route: one `SELECT 1`): the baseline of
   HTTP, middleware and a database round trip;
2. `GET /api/devices` pages of 100, at random offsets and with filters
   (a group, `state=offline`, `state=alerting`), signed in with an API token;
3. `GET /` the dashboard page (the same page queries, the counts, the groups,
   rendered), with the same token.

Meanwhile a writer commits one device's latest state every ``--write-every-s`` (as
ingest's writer does, at most once a second below a full batch), so the
controller's shared pages (controller/fleet/shared_pages.py) are made stale as
often as a fleet sending telemetry makes them; the share of requests that were
answered by a page built for another is printed (with one process only: the
workers' counters are in their own processes; and their pages do not see this
process's writes, so they are kept for their whole second).

Then the same page queries directly through `controller.fleet.queries.list_devices`
(SQLAlchemy, no HTTP, nothing else running). p50, p99 and max of each over
every request of every client, and requests per second.

    .venv/bin/python -m bench.dashboard_api [--db URL | --postgres] [--requests 200]
        [--clients 1,4,8] [--pace-ms 0] [--write-every-s 1] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import insert, update

from cli.brokers.mosquitto import free_port
from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.db.fleet_tables import Alert, Device, DeviceGroup, DeviceState, Group
from controller.fleet.queries import DeviceQuery, list_devices
from controller.settings import load_settings

DEVICES = 10_000
ROOT = Path(__file__).resolve().parent.parent
START_S = 180  # how long the server may take to answer
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


def client(
    base_url: str,
    token: str,
    path: str,
    shapes: list[dict[str, Any]],
    *,
    start_at: float,
    pace_s: float,
) -> list[float]:
    """One client process: warm up, wait for the common start, then time each request
    (one every ``pace_s`` at most, as a user who reads the page; 0: back to back)."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=60) as http:

        def call(i: int) -> None:
            params = shapes[i % len(shapes)] if path != "/healthz" else None
            r = http.get(path, params=params)
            assert r.status_code == 200, r.text[:300]
            if path == "/api/devices":
                assert r.json()["total"] > 0, r.text[:300]

        for i in range(10):
            call(i)
        time.sleep(max(0.0, start_at - time.time()))
        out = []
        for i in range(len(shapes)):
            t0 = time.perf_counter()
            call(i)
            took = time.perf_counter() - t0
            out.append(took * 1000)
            time.sleep(max(0.0, pace_s - took))
        return out


def concurrent(
    pool: ProcessPoolExecutor,
    base_url: str,
    token: str,
    path: str,
    *,
    clients: int,
    shapes: list[dict[str, Any]],
    pace_s: float,
) -> tuple[list[float], float]:
    """Every request's latency from ``clients`` processes at once, and requests a second."""
    start_at = time.time() + 3.0  # every client connected and warm by then
    futures = [
        pool.submit(
            client,
            base_url,
            token,
            path,
            shapes[i::clients] or shapes,
            start_at=start_at,
            pace_s=pace_s,
        )
        for i in range(clients)
    ]
    results = [f.result() for f in futures]
    wall = time.time() - start_at
    samples = [v for r in results for v in r]
    return samples, len(samples) / wall


def writer(state: Any, every_s: float, stop: threading.Event) -> None:
    """One committed write of a shown row every ``every_s``, as ingest's batches make."""
    while not stop.wait(every_s):
        with state.sessions.begin() as db:
            db.execute(
                update(DeviceState)
                .where(DeviceState.device_id == "loa-00001")
                .values(updated_ms=state.now_ms())
            )


@contextmanager
def in_thread(app: Any, port: int) -> Iterator[None]:
    """The app under uvicorn in a thread of this process (one process: ``--workers 1``)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def as_processes(config: Path, workers: int, base_url: str) -> Iterator[None]:
    """`xaso controller --config ...` with ``[http] workers`` in ``config``, until every
    worker serves; stopped by SIGTERM, and its exit code checked."""
    log_path = config.with_name("server.log")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "controller", "--config", str(config)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def output() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    try:
        deadline = time.monotonic() + START_S
        while len(set(re.findall(r"worker (\d+) \(pid \d+\) serving", output()))) < workers:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{output()[-3000:]}")
            time.sleep(0.2)
        assert httpx.get(f"{base_url}/healthz", timeout=30).status_code == 200
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if code != 0:
            print(f"  the server stopped with code {code}:\n{output()[-3000:]}")


def run(  # noqa: PLR0915 (one run's set-up, measurement and report, in order)
    db_url: str, requests: int, levels: list[int], pace_s: float, write_s: float, *, workers: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "controller.toml"
        port = free_port()
        config.write_text(
            f'{CHEAP}[database]\nurl = "{db_url}"\n[mqtt]\nport = 9\n'
            f"[http]\nport = {port}\nworkers = {workers}\n",
            encoding="utf-8",
        )
        # this process's app fills the database and makes the token; with workers, its
        # engine then only writes (``writer``) and times the direct queries
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
        base_url = f"http://127.0.0.1:{port}"
        if workers > 1:
            state.engine.dispose()  # the workers migrate and read on their own connections
            serving = as_processes(config, workers, base_url)
        else:
            serving = in_thread(app, port)
        results: list[tuple[str, int, list[float], float]] = []
        stop = threading.Event()
        try:
            with serving:
                writes = threading.Thread(target=writer, args=(state, write_s, stop), daemon=True)
                writes.start()
                with ProcessPoolExecutor(max(levels), mp_context=get_context("spawn")) as pool:
                    for clients in levels:
                        for path in ("/healthz", "/api/devices", "/"):
                            # each client makes ``requests`` requests, every one its own shape
                            shapes = queries(rng, requests * clients)
                            samples, rate = concurrent(
                                pool,
                                base_url,
                                token,
                                path,
                                clients=clients,
                                shapes=shapes,
                                pace_s=pace_s,
                            )
                            results.append((path, clients, samples, rate))
                stop.set()
                writes.join(10)
                built, served = state.pages.builds, state.pages.builds + state.pages.shared
                off = int(state.settings.alerts.offline_after_min * 60_000)
                shapes = queries(rng, requests)

                def direct(i: int) -> None:
                    with state.sessions() as db:
                        query = DeviceQuery(**shapes[i % len(shapes)])
                        list_devices(db, state.now_ms(), off, query)

                sql = timed(requests, direct)
        finally:
            stop.set()
            state.engine.dispose()
    dialect = db_url.split(":", 1)[0]
    pace = f"a request every {pace_s * 1000:.0f} ms each" if pace_s else "back to back"
    server = (
        "one server process (a thread of the bench's)"
        if workers == 1
        else f"`xaso controller` with {workers} workers"
    )
    print(f"{dialect}: {DEVICES} devices, {requests} requests per client, pages of 100; "
          f"clients in their own processes, {os.cpu_count()} cores, {pace}; {server}")  # fmt: skip
    print(f"  {'':<24}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>8}")
    for path, clients, samples, rate in results:
        p50, p99 = percentiles(samples)
        print(f"  GET {path:<20}{clients:>8}{p50:>9.2f}{p99:>9.2f}{max(samples):>9.2f}"
              f"{rate:>8.0f}")  # fmt: skip
    s50, s99 = percentiles(sql)
    print(f"  list_devices (no HTTP)  {1:>8}{s50:>9.2f}{s99:>9.2f}{max(sql):>9.2f}")
    if workers == 1:
        shared = 100 * (1 - built / max(served, 1))
        print(f"  pages built {built} of {served} asked for ({shared:.0f} % shared), "
              f"a write every {write_s} s")  # fmt: skip
    else:
        print(f"  pages built: counted in the workers, not known here; a write every {write_s} s")
    print(f"  load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", default="", help="a database URL (default: a temp SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--clients", default="1,4,8", help="concurrent clients, each level")
    parser.add_argument(
        "--pace-ms", type=float, default=0, help="each client's request interval (0: no pause)"
    )
    parser.add_argument(
        "--write-every-s", type=float, default=1.0, help="a committed state write this often"
    )
    parser.add_argument(
        "--workers", default="1", help="server processes ([http] workers), each count in turn"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    counts = [int(w) for w in args.workers.split(",")]
    if args.db and len(counts) > 1:
        parser.error("--db holds one run's devices: give one --workers count with it")
    # the app's own warnings (600 alerts raised, no broker for the station) are not the figures
    logging.getLogger("controller").setLevel(logging.ERROR)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.postgres:
        from tests.postgres import PostgresCluster

        cluster = PostgresCluster().start()
        try:
            for workers in counts:
                url = cluster.create_database()
                run(
                    url, args.requests, levels, args.pace_ms / 1000, args.write_every_s,
                    workers=workers,
                )  # fmt: skip
        finally:
            cluster.stop()
        return
    with tempfile.TemporaryDirectory() as tmp:
        for workers in counts:
            run(
                args.db or f"sqlite:///{tmp}/bench-{workers}.db",
                args.requests,
                levels,
                args.pace_ms / 1000,
                args.write_every_s,
                workers=workers,
            )


if __name__ == "__main__":
    main()
