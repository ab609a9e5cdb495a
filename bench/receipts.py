"""Receipts' cost (docs/delivery.md): ingest with and without them, and the edge's outbox.

1. **Ingest.** Publisher processes send valid events (QoS 1, each its own
   id) for 1,000 devices at an offered rate above what ingest takes, into a
   private Mosquitto. One ingest process (Bus + Ingest, as the controller runs
   them) writes them, sending receipts after each commit, then the same
   without receipts; interleaved ``--rounds`` times in one run. The rate is
   events committed per second (``SELECT count(*)`` of ``events``) over a
   window after a warm-up; every event received must be stored.
2. **The edge's outbox.** A real LocalStore and Outbox on a real MqttLink, as
   the agent wires them, with ingest (receipts on) in the same process: N
   events put as fast as the store takes them, until the outbox is empty;
   with receipts (kept until each one's receipt) and without (deleted on
   PUBACK). Reported: rows written to SQLite per event (``total_changes``),
   and the time to empty the outbox.

    .venv/bin/python -m bench.receipts [--db URL | --postgres] [--seconds 10]
        [--rate 6000] [--rounds 2] [--events 5000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from bench.telemetry_ingest import WARMUP_S, _database, _no_delay
from cli.brokers.mosquitto import Mosquitto
from controller.bus import Bus
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import EventRecord
from controller.fleet.ingest import Ingest
from edge.mqtt import LinkSettings, MqttLink, Will
from edge.outbox import Outbox
from edge.store import LocalStore
from plumbing.backoff import Backoff
from protocol.receipts import Receipt

DEVICES = 1000


def _publish(host: str, port: int, index: int, rate: float, ready: Any, stop: Any) -> None:  # noqa: PLR0917
    """One publisher process: ``rate`` events/s, each with its own id, over the devices."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.connect(host, port, keepalive=30)
    _no_delay(client)
    client.loop_start()
    topics = [f"xaso/dev/dev-{n:04d}/event" for n in range(DEVICES)]
    ready.set()  # a spawned process takes seconds to start on a loaded machine
    tick_s, sent, started = 0.01, 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            payload = (
                b'{"id":"p%d-%d","type":"play.missed","ts":1800000000000,'
                b'"body":{"key":"k%d","reason":"late"}}' % (index, sent, sent)
            )
            client.publish(topics[sent % DEVICES], payload, qos=1)
            sent += 1
        time.sleep(tick_s)
    client.disconnect()
    client.loop_stop()


def _replica(  # noqa: PLR0917 - a process target takes its arguments by position
    host: str, port: int, url: str, receipts: bool, ready: Any, stop: Any, out: Any
) -> None:
    engine = make_engine(url)
    bus = Bus(host, port, "bench", "", client_id=f"bench-ingest-{os.getpid()}")
    ingest = Ingest(bus, session_factory(engine), receipts=receipts)
    ingest.start()
    bus.start()
    ready.set()
    cpu = time.process_time()
    stop.wait()
    cpu = time.process_time() - cpu
    bus.close()
    ingest.close()
    s = ingest.stats
    out.put((s.received, s.stored["event"], s.receipts, s.receipt_errors, cpu))
    engine.dispose()


def ingest_phase(host: str, port: int, url: str, receipts: bool, args: argparse.Namespace) -> str:
    ctx = multiprocessing.get_context("spawn")
    stop, out, ready = ctx.Event(), ctx.Queue(), ctx.Event()
    replica = ctx.Process(target=_replica, args=(host, port, url, receipts, ready, stop, out))
    replica.start()
    if not ready.wait(60):
        raise RuntimeError("the ingest replica did not start")
    engine = make_engine(url)

    def rows() -> int:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(EventRecord)) or 0)

    before = rows()
    pub_stop, pub_ready = ctx.Event(), [ctx.Event(), ctx.Event()]
    pubs = [
        ctx.Process(
            target=_publish, args=(host, port, p, args.rate / 2, pub_ready[p % 2], pub_stop)
        )
        for p in (2 * args.phase_no, 2 * args.phase_no + 1)  # ids new in every phase
    ]
    args.phase_no += 1
    for p in pubs:
        p.start()
    if not all(r.wait(60) for r in pub_ready):
        raise RuntimeError("a publisher did not start")
    time.sleep(WARMUP_S)
    c1, t1 = rows(), time.monotonic()
    time.sleep(args.seconds)
    c2, t2 = rows(), time.monotonic()
    pub_stop.set()
    for p in pubs:
        p.join(30)
    stop.set()
    received, stored_n, sent, failed, cpu = out.get(timeout=120)
    replica.join(30)
    stored = rows() - before
    engine.dispose()
    check = "ok" if stored == received == stored_n else "MISMATCH"
    rate = (c2 - c1) / (t2 - t1)
    return (
        f"receipts {'on ' if receipts else 'off'}: {rate:8,.0f} events/s  "
        f"{cpu / max(1, received) * 1e6:5.1f} us CPU/event  (received {received:,}, "
        f"stored {stored:,}, {sent:,} receipt messages, {failed} not taken: {check})"
    )


def outbox_phase(host: str, port: int, tmp: Path, receipts: bool, n_events: int) -> str:
    """An agent's outbox wired as edge/agent.py does, until it is empty."""
    store = LocalStore(tmp / f"outbox-{receipts}.sqlite3")
    box: list[Outbox] = []
    device = f"edge-{int(receipts)}"

    def on_message(_topic: str, payload: bytes) -> None:
        box[0].receipted(msgspec.json.decode(payload, type=Receipt).ids)

    link = MqttLink(
        LinkSettings(host, port, f"bench-{device}", device, None),
        Backoff(0.2, 2.0),
        will=Will(f"xaso/dev/{device}/status", b"{}"),
        subscriptions=lambda: [f"xaso/dev/{device}/receipt"],
        on_connected=lambda: box[0].connected(),  # noqa: PLW0108 - made below
        on_disconnected=lambda: box[0].disconnected(),  # noqa: PLW0108
        on_message=on_message,
        on_published=lambda mid: box[0].published(mid),  # noqa: PLW0108
    )
    outbox = Outbox(store, link.publish, lambda: time.time_ns() // 1_000_000, receipts=receipts)
    box.append(outbox)
    outbox.start()
    link.start()
    while not link.connected:
        time.sleep(0.05)
    changes = store.rows_written()
    started = time.monotonic()
    for n in range(n_events):
        outbox.put(
            f"xaso/dev/{device}/event",
            b'{"id":"o%d","type":"play.missed","ts":1800000000000,"body":{"key":"k","reason":"x"}}'
            % n,
            event_id=f"o{n}",
        )
    put_s = time.monotonic() - started
    empty = outbox.wait_empty(600)
    took = time.monotonic() - started
    rows = (store.rows_written() - changes) / n_events
    link.close(None)
    outbox.stop()
    store.close()
    return (
        f"outbox, receipts {'on ' if receipts else 'off'}: {n_events:,} events, "
        f"{rows:.2f} rows written per event, put {put_s:.2f} s, empty after {took:.2f} s"
        f"{'' if empty else ' (NOT EMPTY)'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    where.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per phase")
    parser.add_argument("--rate", type=float, default=6000, help="offered events/s in total")
    parser.add_argument("--rounds", type=int, default=2, help="on and off phases, interleaved")
    parser.add_argument("--events", type=int, default=5000, help="events through the outbox")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    lines = []
    with tempfile.TemporaryDirectory(prefix="xaso-bench-") as tmp, _database(args, tmp) as url:
        upgrade(url)
        with Mosquitto(Path(tmp) / "broker", persistence=False) as broker:
            args.phase_no = 0
            for _ in range(args.rounds):
                for receipts in (True, False):
                    lines.append(ingest_phase(broker.host, broker.port, url, receipts, args))
            # the edge: a controller in this process receipts what it stores
            engine = make_engine(url)
            bus = Bus(broker.host, broker.port, "bench", "", client_id="bench-ingest-edge")
            ingest = Ingest(bus, session_factory(engine))
            ingest.start()
            bus.start()
            try:
                for receipts in (True, False):
                    lines.append(
                        outbox_phase(broker.host, broker.port, Path(tmp), receipts, args.events)
                    )
            finally:
                bus.close()
                ingest.close()
                engine.dispose()
    dialect = url.split(":", 1)[0].split("+")[0]
    print(
        f"receipts into {dialect}, {DEVICES} devices, events at QoS 1, offered "
        f"{args.rate:,.0f} events/s, {args.seconds:.0f} s window after {WARMUP_S:.0f} s "
        f"warm-up, {os.cpu_count()} CPUs, load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
