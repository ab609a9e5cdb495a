"""Pages and APIs at province scale: the dashboard, broadcasts, schedules and per-bulletin
report, p50/p99 and weight, as a province user and as a commune user, against a baseline.

A private PostgreSQL holds two databases, each seeded by bench/_province.py:

- the baseline: one commune with ``--devices / --communes`` speakers (a commune's
  share of the province), the same days of plays at the same rate;
- the province: ``--communes`` communes, ``--devices`` speakers in villages of 10,
  ``--days`` of plays (``--plays-per-day`` a speaker, a daily entry a commune at
  those times of day), a weekly broadcast a commune and a monthly one of the
  province with every speaker's ack.

Each app in turn runs under uvicorn in a thread of this process; one client in its own
process (as a browser is) signs in with a broadcaster's API token, the province's or
the first commune's, and asks each page ``--requests`` times one after another (after 3
unmeasured), or for ``--budget-s`` if that ends first. The weight is the body as sent
(no compression). Goal (issue 14): p99 at most 300 ms, and under 300 KB.

    nice -n 19 .venv/bin/python -m bench.province_pages [--communes 300] [--devices 20000]
        [--days 365] [--plays-per-day 3] [--requests 100] [--budget-s 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import httpx
import uvicorn

from bench._province import TZ, Province, Scale, province
from bench.dashboard_api import percentiles
from cli.brokers.mosquitto import free_port

GOAL_MS, GOAL_BYTES = 300, 300_000


def paths(now: dt.datetime, commune: str) -> list[tuple[str, str]]:
    """(what, path): the four pages and the APIs behind them; ``commune``: the one chosen."""
    day = now.astimezone(TZ).date() - dt.timedelta(days=1)
    one = f"{day:%d/%m/%Y}"
    start_ms = int(dt.datetime.combine(day, dt.time(), TZ).timestamp() * 1000)
    return [
        ("dashboard", "/"),
        ("broadcasts", "/broadcasts"),
        ("schedules (today)", "/schedules"),
        ("report: log, 7 days", "/reports/log"),  # the province: choose a commune first
        ("report: log, 7 d, a commune", f"/reports/log?commune={commune}"),
        ("report: log, 1 day", f"/reports/log?start={one}&end={one}"),
        ("api devices", "/api/devices"),
        ("api broadcasts", "/api/broadcasts"),
        ("api schedules", "/api/schedules"),
        ("api log, 1 day", f"/api/reports/log?start_ms={start_ms}&end_ms={start_ms + 86_400_000}"),
    ]


def client(
    base_url: str, token: str, path: str, n: int, budget_s: float
) -> list[tuple[float, int]]:
    """One browser: (ms, bytes) of each request, one after another."""
    auth = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    out = []
    with httpx.Client(base_url=base_url, headers=auth, timeout=300) as http:
        deadline = None
        for i in range(n + 3):
            t0 = time.perf_counter()
            got = http.get(path)
            ms = (time.perf_counter() - t0) * 1000
            assert got.status_code == 200, f"{path}: {got.status_code} {got.text[:300]}"
            if i < 3:
                continue
            deadline = deadline or time.monotonic() + budget_s
            out.append((ms, len(got.content)))
            if time.monotonic() > deadline:
                break
    return out


def measure(
    pool: ProcessPoolExecutor, site: Province, label: str, args: argparse.Namespace
) -> list[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(site.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    lines = []
    try:
        for what, path in paths(dt.datetime.now(dt.UTC), site.commune):
            for who, token in (("province", site.province_token), ("commune", site.commune_token)):
                got = pool.submit(
                    client, f"http://127.0.0.1:{port}", token, path, args.requests, args.budget_s
                ).result()
                ms = [m for m, _ in got]
                p50, p99 = percentiles(ms) if len(ms) > 1 else (ms[0], ms[0])
                size = max(b for _, b in got)
                ok = "ok" if p99 <= GOAL_MS and size < GOAL_BYTES else "MISS"
                lines.append(f"  {label:9}{what:28}{who:9}{len(ms):>5}{p50:>9.1f}{p99:>9.1f}"
                             f"{size / 1000:>10.1f}  {ok}")  # fmt: skip
                print(lines[-1], flush=True)
    finally:
        server.should_exit = True
        thread.join(10)
        site.app.state.xaso.engine.dispose()
    return lines


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--communes", type=int, default=300)
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--plays-per-day", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100, help="per page and user")
    parser.add_argument("--budget-s", type=float, default=60.0, help="per page and user")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on a kill
    logging.getLogger("controller").setLevel(logging.ERROR)  # no broker: the station's retries
    logging.getLogger("xaso").setLevel(logging.ERROR)
    from tests.postgres import PostgresCluster

    print(f"uptime before: {uptime()}", flush=True)
    cluster = PostgresCluster().start()
    scales = [
        ("baseline", Scale(1, args.devices // args.communes, args.days, args.plays_per_day)),
        ("province", Scale(args.communes, args.devices, args.days, args.plays_per_day)),
    ]
    results = []
    try:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            for label, scale in scales:
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.monotonic()
                    site = province(Path(tmp), cluster.create_database(), scale)
                    print(f"{label}: {scale.communes} communes, {scale.devices} speakers, "
                          f"{scale.days} days x {scale.plays_per_day} plays: {site.events} "
                          f"play events, seeded in {time.monotonic() - t0:.0f} s",
                          flush=True)  # fmt: skip
                    print(f"  {'':9}{'page':28}{'as':9}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}"
                          f"{'max KB':>10}")  # fmt: skip
                    results += measure(pool, site, label, args)
    finally:
        cluster.stop()
    print(f"uptime after: {uptime()}")
    print(f"goal: p99 <= {GOAL_MS} ms and < {GOAL_BYTES // 1000} KB; "
          f"{sum('MISS' in r for r in results)} of {len(results)} miss")  # fmt: skip


if __name__ == "__main__":
    main()
