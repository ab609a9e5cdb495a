"""The citizens' public pages at 1,000 concurrent phones: the ticket status page and the
booking page, against the controller's cheapest routes in the same run.

The controller runs as deployed, ``python -m cli.main controller`` (uvicorn, one
process), on a SQLite file or a private PostgreSQL holding one office's day: 300
tickets issued on ``kiosk-1`` over the last two hours, 250 of them called and served
(the events the ingest would have stored). The phones are asyncio tasks with httpx,
spread over ``--procs`` client processes; all of them start together and each makes
``--rounds`` requests one after another: with no pause (a saturation test, every phone
reloading at once), or with ``--pace-s 15`` one every 15 s, the phones spread over the
first interval (what a hall of phones on the page's own refresh asks). The controller is
given ``--settle-s`` after it answers, then every route is warmed with 200 phones (not
counted). Routes, one after another:

1. ``GET /healthz`` (one ``SELECT 1``) and ``GET /static/public.css`` (a file): the
   baseline of HTTP, the middlewares and the event loop under this many connections;
2. ``GET /ve/kiosk-1/{ticket}``: a waiting ticket's status page (a replay of the day's
   events shared by concurrent requests for ``CACHE_S``, the wait rule, the template);
3. ``GET /dat-lich/kiosk-1/ho-tich``: the booking page (the days, each slot's places
   from the database, the template);
4. ``GET /healthz`` again: on a shared machine the load drifts over a run, and a
   baseline at both ends shows how much.

p50, p99 and max over every request of every phone, requests per second, failures and
what they were (an HTTP status, or httpx's exception).

    .venv/bin/python -m bench.public_pages [--postgres] [--phones 1000] [--rounds 3]
        [--procs 4] [--pace-s 0] [--settle-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import httpx

from bench._swarm import raise_nofile
from cli.brokers.mosquitto import free_port
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import EventRecord
from controller.site.keys import init_site
from protocol.events import Body, TicketCalled, TicketIssued, TicketServed

ROOT = Path(__file__).resolve().parent.parent
TICKETS, SERVED = 300, 250
CONFIG = """[security]
argon2_time_cost = 1
argon2_memory_kib = 1024
argon2_parallelism = 1
[site]
dir = "{site}"
[database]
url = "{db}"
[http]
port = {port}
[mqtt]
port = {mqtt}
[booking]
status_views_per_ip_per_min = 1000000
[[booking.offices]]
kiosk = "kiosk-1"
name = "Bộ phận một cửa UBND xã Tân Phú"
[[booking.offices.services]]
code = "ho-tich"
name_vi = "Hộ tịch"
name_en = "Civil status"
"""


def populate(url: str, now_ms: int) -> list[str]:
    """One office's day of ticket events; the ids of the tickets still waiting."""
    upgrade(url)
    engine = make_engine(url)
    rows: list[tuple[int, Body]] = []
    start = now_ms - 2 * 3600_000
    day = time.strftime("%Y-%m-%d", time.localtime(now_ms / 1000))
    waiting = []
    for n in range(1, TICKETS + 1):
        tid = str(uuid.uuid4())
        fields = {"ticket_id": tid, "number": f"A{n:03d}", "service": "ho-tich",
                  "queue": "ho-tich", "day": day, "priority": n % 17 == 0}  # fmt: skip
        at = start + n * 20_000
        rows.append((at, TicketIssued(**fields, issued_ms=at, people_ahead=0, wait_s=None)))
        if n <= SERVED:
            called = at + 5 * 60_000
            rows.append((called, TicketCalled(**fields, counter=1 + n % 3, recall=0,
                                              waited_ms=called - at)))  # fmt: skip
            rows.append((called + 240_000, TicketServed(**fields, counter=1 + n % 3,
                                                        service_ms=240_000)))  # fmt: skip
        else:
            waiting.append(tid)
    with session_factory(engine).begin() as db:
        for i, (ts, body) in enumerate(rows):
            db.add(EventRecord(device_id="kiosk-1", event_id=f"e{i}", type=body.TYPE,
                               ts_ms=ts, received_ms=ts, body=body.wire()))  # fmt: skip
    engine.dispose()
    return waiting


@dataclass(frozen=True)
class Plan:
    """What each client process does: its phones, their requests, when they start."""

    phones: int
    rounds: int
    start_at: float  # epoch s
    pace_s: float  # 0: back to back


async def _phones(base: str, paths: list[str], plan: Plan) -> tuple[list[float], Counter[str]]:
    phones, rounds, start_at, pace_s = plan.phones, plan.rounds, plan.start_at, plan.pace_s
    # paced, a phone opens a new connection for each reload (as after 15 s a browser's
    # would: uvicorn closes an idle one after 5 s, and reusing it races the close)
    keep = 0 if plan.pace_s else phones
    limits = httpx.Limits(max_connections=phones, max_keepalive_connections=keep)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def phone(i: int) -> tuple[list[float], Counter[str]]:
            took: list[float] = []
            failed: Counter[str] = Counter()
            rng = random.Random(i)
            if pace_s:
                await asyncio.sleep(rng.uniform(0, pace_s))  # phones spread over the interval
            for r in range(rounds):
                path = paths[(i + r) % len(paths)]
                t0 = time.perf_counter()
                try:
                    answer = await client.get(path)
                    if answer.status_code != 200:
                        failed[str(answer.status_code)] += 1
                except httpx.HTTPError as exc:
                    failed[type(exc).__name__] += 1
                took.append((time.perf_counter() - t0) * 1000)
                if pace_s:
                    await asyncio.sleep(max(0.0, pace_s - (time.perf_counter() - t0)))
            return took, failed

        results = await asyncio.gather(*(phone(i) for i in range(phones)))
    return [t for took, _ in results for t in took], sum((f for _, f in results), Counter())


def client_process(base: str, paths: list[str], plan: Plan) -> tuple[list[float], Counter[str]]:
    raise_nofile()
    return asyncio.run(_phones(base, paths, plan))


def warm(_: int) -> None:
    time.sleep(0.5)  # keeps this worker busy so that the pool starts every other one


def measure(
    pool: ProcessPoolExecutor, base: str, paths: list[str], args: argparse.Namespace
) -> tuple[list[float], Counter[str], float]:
    per = [args.phones // args.procs + (i < args.phones % args.procs) for i in range(args.procs)]
    start_at = time.time() + 1.0  # every process connected and waiting
    futures = [
        pool.submit(client_process, base, paths, Plan(n, args.rounds, start_at, args.pace_s))
        for n in per
    ]
    done = [f.result() for f in futures]
    wall = time.time() - start_at
    return [t for took, _ in done for t in took], sum((f for _, f in done), Counter()), wall


def run(args: argparse.Namespace, url: str, tmp: Path) -> None:
    raise_nofile()
    site = init_site(tmp / "site")
    port = free_port()
    config = tmp / "controller.toml"
    config.write_text(
        CONFIG.format(site=site.dir, db=url, port=port, mqtt=free_port()), encoding="utf-8"
    )
    waiting = populate(url, int(time.time() * 1000))
    log = (tmp / "controller.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "controller", "--config", str(config)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the controller did not start:\n{(tmp / 'controller.log').read_text()}"
                )
            time.sleep(0.2)
        check = httpx.get(f"{base}/ve/kiosk-1/{waiting[-1]}", timeout=30)
        assert check.status_code == 200 and "Số người đang chờ trước" in check.text, check.text
        routes = [
            ("GET /healthz", ["/healthz"]),
            ("GET /static/public.css", ["/static/public.css"]),
            ("GET /ve/{kiosk}/{ticket}", [f"/ve/kiosk-1/{t}" for t in waiting]),
            ("GET /dat-lich/{kiosk}/{service}", ["/dat-lich/kiosk-1/ho-tich"]),
            ("GET /healthz (again, last)", ["/healthz"]),  # the machine's drift over the run
        ]
        kind = "postgresql" if url.startswith("postgresql") else "sqlite"
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        how = f"one every {args.pace_s:g} s" if args.pace_s else "back to back"
        print(f"{kind}: {args.phones} phones in {args.procs} client processes, {args.rounds} "
              f"requests each, {how}; the controller in its own process, {os.cpu_count()} "
              f"cores; {TICKETS} tickets today, {TICKETS - SERVED} waiting")  # fmt: skip
        print(f"  {'':34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>7} {'failed':>7}")
        pool = ProcessPoolExecutor(args.procs, mp_context=get_context("spawn"))
        list(pool.map(warm, range(args.procs)))
        # the first minute after start measured up to 100 times slower (the services
        # starting, first renders): settle, and warm every route, before measuring
        time.sleep(args.settle_s)
        warm_up = argparse.Namespace(phones=200, procs=args.procs, rounds=2, pace_s=0.0)
        for _name, paths in routes:
            measure(pool, base, paths, warm_up)
        for name, paths in routes:
            took, failed, wall = measure(pool, base, paths, args)
            q = statistics.quantiles(took, n=100)
            why = ", ".join(f"{k} {n}" for k, n in failed.most_common())
            print(f"  {name:34} {q[49]:8.1f} {q[98]:8.1f} {max(took):8.1f} "
                  f"{len(took) / wall:7.0f} {failed.total():7d} {why}")  # fmt: skip
        print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        pool.shutdown()
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=30.0, help="after start")
    parser.add_argument(
        "--pace-s", type=float, default=0.0, help="each phone's reload interval (0: none)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            from tests.postgres import PostgresCluster

            cluster = PostgresCluster().start()
            try:
                run(args, cluster.create_database(), Path(tmp))
            finally:
                cluster.stop()
            return
        run(args, f"sqlite:///{tmp}/controller.db", Path(tmp))


if __name__ == "__main__":
    main()
