"""The live pages' feed with 10,000 devices: what one poll costs, and what a page adds.

The dashboard benchmark's 10,000 devices (bench/dashboard_api.py: states,
groups, a few hundred open alerts), plus a day of play records (four plays
per speaker: 76,000 events) and 30 recent broadcasts to 100 speakers each.
Then, in the same run:

1. the feed's first pass (each speaker's latest play record of the day);
2. steady passes while 20 devices change state and 50 play records arrive
   between passes, with 1 page listening and with 200;
3. per pass: statements run and the items handed to the pages.

    .venv/bin/python -m bench.live_feed [--postgres] [--passes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from typing import Any

from sqlalchemy import event, insert, update

from bench.dashboard_api import DEVICES, percentiles, populate
from controller.db.broadcast_tables import BroadcastAckRow, BroadcastRow
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import DeviceState, EventRecord
from controller.fleet.live import LiveFeed

OFFLINE_MS = 600_000


def plays(now: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for i in range(DEVICES):
        if i % 20 == 0:
            continue  # a kiosk
        for n in range(4):
            start = now - rng.randrange(1, 86_400_000)
            for kind, ts in (("play.started", start), ("play.finished", start + 60_000)):
                rows.append(
                    {"device_id": f"loa-{i:05d}", "event_id": f"{i}-{n}-{kind}", "type": kind,
                     "ts_ms": ts, "received_ms": ts, "body": {"key": f"k{n}", "priority": 2}}
                )  # fmt: skip
    return rows


def run(db_url: str, passes: int) -> None:
    rng = random.Random(7)
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    now = int(time.time() * 1000)
    populate(sessions, now, rng)
    with sessions.begin() as db:
        db.execute(insert(EventRecord), plays(now, rng))
        for b in range(30):
            db.add(BroadcastRow(id=f"{b:032x}", kind="play", targets=[], level="normal",
                                priority=2, label="", created_by="b", created_ms=now - b * 1000,
                                status="sent",
                                devices=[f"loa-{d:05d}" for d in range(1, 101)]))  # fmt: skip
        db.flush()  # half of them answered: a row is made at an ack
        db.execute(
            insert(BroadcastAckRow),
            [{"broadcast_id": f"{b:032x}", "device": f"loa-{d:05d}", "ok": True}
             for b in range(30) for d in range(1, 51)],
        )  # fmt: skip
    statements = [0]
    event.listen(
        engine, "before_cursor_execute", lambda *_a: statements.__setitem__(0, statements[0] + 1)
    )
    clock = [now]
    feed = LiveFeed(sessions, offline_after_ms=OFFLINE_MS, clock_ms=lambda: clock[0])
    loop = asyncio.new_event_loop()
    print(f"{engine.dialect.name}: {DEVICES} devices, 76000 play records, 30 broadcasts x 100")
    for pages in (1, 200):
        subs = [feed.subscribe(loop) for _ in range(pages)]
        started = time.perf_counter()
        feed.poll()
        first_ms = (time.perf_counter() - started) * 1000
        loop.run_until_complete(asyncio.sleep(0))
        for s in subs:
            s.take()
        took, counts, items = [], [], []
        for p in range(passes):
            clock[0] += 1000
            with sessions.begin() as db:
                flip = [f"loa-{rng.randrange(1, DEVICES):05d}" for _ in range(20)]
                db.execute(
                    update(DeviceState)
                    .where(DeviceState.device_id.in_(flip))
                    .values(state="offline" if p % 2 else "online")
                )
                db.execute(insert(EventRecord), [
                    {"device_id": f"loa-{rng.randrange(1, DEVICES):05d}",
                     "event_id": f"n-{pages}-{p}-{k}", "type": "play.started", "ts_ms": clock[0],
                     "received_ms": clock[0], "body": {"key": f"n{p}", "priority": 5}}
                    for k in range(50)
                ])  # fmt: skip
            statements[0] = 0
            started = time.perf_counter()
            feed.poll()
            loop.run_until_complete(asyncio.sleep(0))
            handed = sum(len(s.take()) for s in subs)
            took.append((time.perf_counter() - started) * 1000)
            counts.append(statements[0])
            items.append(handed / pages)
        p50, p99 = percentiles(took)
        print(
            f"  {pages:>3} page(s): first pass {first_ms:7.1f} ms; a pass p50 {p50:6.1f} ms "
            f"p99 {p99:6.1f} ms; {max(counts)} statements; {sum(items) / passes:.0f} items a page"
        )
        for s in subs:
            feed.unsubscribe(s)
        feed = LiveFeed(sessions, offline_after_ms=OFFLINE_MS, clock_ms=lambda: clock[0])
    loop.close()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    parser.add_argument("--passes", type=int, default=60)
    args = parser.parse_args()
    if args.postgres:
        from tests.postgres import PostgresCluster

        cluster = PostgresCluster().start()
        try:
            run(cluster.create_database(), args.passes)
        finally:
            cluster.stop()
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{tmp}/bench.db", args.passes)


if __name__ == "__main__":
    main()
