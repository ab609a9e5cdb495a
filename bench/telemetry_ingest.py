"""Telemetry ingest: sustained messages/s into the database from 1,000 simulated devices.

Publisher processes send valid telemetry JSON (QoS 0, as agents do) as 1,000
device ids at an offered rate above what either subscriber can take, into a
private Mosquitto. In the same run, two phases with the same stream:

1. a bare paho subscriber that only parses the JSON (the ceiling);
2. the controller's Bus + Ingest, validating with the protocol schemas and
   committing samples and device states to the database.

Each phase's rate is counted over a steady window after a warm-up; the
ingest's count is of rows committed. Target: ingest / bare >= 0.5.

    .venv/bin/python -m bench.telemetry_ingest [--db URL] [--seconds 10] [--rate 20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from controller.bus import Bus
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import TelemetrySample
from controller.ingest import Ingest
from controller.mosquitto import Mosquitto
from protocol.uplink import Telemetry

DEVICES = 1000
WARMUP_S = 2.0


def _payload(n: int) -> bytes:
    sample = Telemetry(
        ts=time.time_ns() // 1_000_000,
        uptime_s=1000.0 + n,
        agent_uptime_s=900.0,
        cpu_temp_c=48.5,
        load1=0.3,
        mem_used_pct=41.0,
        disk_free_mb=20_000.0,
        rss_mb=48.0,
        cpu_pct=2.5,
        clip_cache={"count": 12, "bytes": 40_000_000},
        outbox_len=0,
        agent="0.1.0",
    )
    return sample.model_dump_json().encode()


def _no_delay(client: paho.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _publish(host: str, port: int, devices: range, rate: float, stop: Any) -> None:
    """One publisher process: ``devices`` (as dev-NNNN), ``rate`` messages/s."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.connect(host, port, keepalive=30)
    _no_delay(client)
    client.loop_start()
    topics = [f"xaso/dev/dev-{n:04d}/telemetry" for n in devices]
    count = len(topics)
    payload = _payload(devices.start)
    tick_s, sent, started = 0.01, 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            client.publish(topics[sent % count], payload, qos=0)
            sent += 1
        time.sleep(tick_s)
    client.disconnect()
    client.loop_stop()


def _measure(count: Callable[[], int], host: str, port: int, args: argparse.Namespace) -> float:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    share = DEVICES // args.publishers
    procs = [
        ctx.Process(
            target=_publish,
            args=(host, port, range(p * share, (p + 1) * share), args.rate / args.publishers, stop),
        )
        for p in range(args.publishers)
    ]
    for p in procs:
        p.start()
    time.sleep(WARMUP_S)
    c1, t1 = count(), time.monotonic()
    time.sleep(args.seconds)
    c2, t2 = count(), time.monotonic()
    stop.set()
    for p in procs:
        p.join(30)
    return (c2 - c1) / (t2 - t1)


def bare_paho(host: str, port: int, args: argparse.Namespace) -> float:
    received = [0]

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        json.loads(msg.payload)
        received[0] += 1

    ready = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.on_message = on_message
    c.on_subscribe = lambda *_: ready.set()
    c.connect(host, port, keepalive=30)
    _no_delay(c)
    c.subscribe("xaso/dev/+/telemetry", qos=1)
    c.loop_start()
    ready.wait(10)
    try:
        return _measure(lambda: received[0], host, port, args)
    finally:
        c.disconnect()
        c.loop_stop()


def ingest(host: str, port: int, url: str, args: argparse.Namespace) -> tuple[float, int]:
    engine = make_engine(url)
    bus = Bus(host, port, "bench", "", client_id="bench-ingest")
    ingest = Ingest(bus, session_factory(engine))
    ingest.start()
    bus.start()
    try:
        rate = _measure(lambda: ingest.stats.stored["telemetry"], host, port, args)
    finally:
        bus.close()
        ingest.close()
    with engine.connect() as conn:
        rows = int(conn.scalar(select(func.count()).select_from(TelemetrySample)) or 0)
    engine.dispose()
    return rate, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per phase")
    parser.add_argument("--rate", type=float, default=20_000, help="offered messages/s in total")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xaso-bench-") as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'controller.db'}"
        upgrade(url)
        with Mosquitto(Path(tmp) / "broker", persistence=False) as broker:
            bare = bare_paho(broker.host, broker.port, args)
            stored, rows = ingest(broker.host, broker.port, url, args)
    dialect = url.split(":", 1)[0]
    print(
        f"telemetry ingest, {DEVICES} devices, offered {args.rate:,.0f} msg/s, "
        f"{args.seconds:.0f} s window after {WARMUP_S:.0f} s warm-up, {os.cpu_count()} CPUs"
    )
    print(f"bare paho (parse JSON only):        {bare:10,.0f} msg/s")
    print(f"Bus + Ingest into {dialect:<16} {stored:10,.0f} msg/s  ({rows:,} rows stored)")
    print(f"ratio ingest/bare: {stored / bare:.2f}  (target >= 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
