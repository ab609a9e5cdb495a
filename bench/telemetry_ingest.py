"""Telemetry ingest: sustained messages/s into the database from 1,000 simulated devices.

Publisher processes send valid telemetry JSON (QoS 0, as agents do) as 1,000
device ids at an offered rate above what either subscriber can take, into a
private Mosquitto. In the same run, two phases with the same stream:

1. a bare paho subscriber that only parses the JSON (the ceiling);
2. the same subscriber on paho reading in large chunks, as the controller's
   bus does (plumbing/mqtt_reads.py): what the reads alone gain;
3. the controller's Bus + Ingest in one process, validating with the protocol
   schemas and committing samples and device states to the database;
4. the same with ``--ingest-processes`` replicas (default 2) on the shared
   subscription ``$share/ingest/...`` and the same database: how the
   controller scales ingest past one process's GIL.

Each ingest replica is a process of its own, as in production. Each phase's
rate is counted over a steady window after a warm-up: for ingest, rows of
``telemetry_samples`` committed (``SELECT count(*)``). After each phase the
replicas drain, and every valid message received must be a stored row.
The headline is capacity: the bare (stock paho) subscriber's CPU per message
over ingest's, with the phases interleaved (``--rounds``). Target: 0.7.

With ``--qos 1`` the stream is sent at QoS 1, as events and acks are: ingest
then acknowledges each message only after its batch has committed
(docs/delivery.md), and the bare subscriber acknowledges on receipt.

    .venv/bin/python -m bench.telemetry_ingest [--db URL | --postgres] [--seconds 10]
        [--rate 20000] [--ingest-processes 2] [--qos 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from cli.brokers.mosquitto import Mosquitto
from controller.bus import Bus
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import TelemetrySample
from controller.fleet.alerts import AlertEngine
from controller.fleet.ingest import Ingest
from plumbing.mqtt_reads import ChunkedReadClient
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
    return msgspec.json.encode(sample)


def _no_delay(client: paho.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _publish(  # noqa: PLR0917 - a process target takes its arguments by position
    host: str, port: int, devices: range, rate: float, stop: Any, qos: int, ready: Any
) -> None:
    """One publisher process: ``devices`` (as dev-NNNN), ``rate`` messages/s."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.connect(host, port, keepalive=30)
    _no_delay(client)
    client.loop_start()
    topics = [f"xaso/dev/dev-{n:04d}/telemetry" for n in devices]
    count = len(topics)
    # each sample its own ts: ingest stores one sample per (device, ts)
    head, tail = _payload(devices.start).split(b'"ts":', 1)
    tail = tail.split(b",", 1)[1]
    base_ms = time.time_ns() // 1_000_000
    ready.set()  # a spawned process takes seconds to start on a loaded machine
    tick_s, sent, started = 0.01, 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            payload = b'%s"ts":%d,%s' % (head, base_ms + sent, tail)
            client.publish(topics[sent % count], payload, qos=qos)
            sent += 1
        time.sleep(tick_s)
    client.disconnect()
    client.loop_stop()


def _measure(count: Callable[[], int], host: str, port: int, args: argparse.Namespace) -> float:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    share = DEVICES // args.publishers
    readies = [ctx.Event() for _ in range(args.publishers)]
    procs = [
        ctx.Process(
            target=_publish,
            args=(
                host,
                port,
                range(p * share, (p + 1) * share),
                args.rate / args.publishers,
                stop,
                args.qos,
                readies[p],
            ),
        )
        for p in range(args.publishers)
    ]
    for p in procs:
        p.start()
    if not all(r.wait(120) for r in readies):
        raise RuntimeError("a publisher did not start")
    time.sleep(WARMUP_S)
    c1, t1 = count(), time.monotonic()
    time.sleep(args.seconds)
    c2, t2 = count(), time.monotonic()
    stop.set()
    for p in procs:
        p.join(30)
    return (c2 - c1) / (t2 - t1)


def bare_paho(
    host: str, port: int, args: argparse.Namespace, *, chunked: bool = False
) -> tuple[float, float]:
    """The rate, and CPU seconds per message received (this process does nothing else)."""
    received = [0]

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        json.loads(msg.payload)
        received[0] += 1

    ready = threading.Event()
    kind = ChunkedReadClient if chunked else paho.Client
    c = kind(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.on_message = on_message
    c.on_subscribe = lambda *_: ready.set()
    c.connect(host, port, keepalive=30)
    _no_delay(c)
    c.subscribe("xaso/dev/+/telemetry", qos=1)
    c.loop_start()
    ready.wait(10)
    cpu, before = time.process_time(), received[0]
    try:
        return _measure(lambda: received[0], host, port, args), (
            (time.process_time() - cpu) / max(1, received[0] - before)
        )
    finally:
        c.disconnect()
        c.loop_stop()


def bare_gmqtt(host: str, port: int, args: argparse.Namespace) -> tuple[float, float]:
    """As `bare_paho`, on gmqtt (asyncio, its own thread), which is not a dependency:
    ``uv pip install gmqtt`` first. MQTT 3.1.1, as the bus speaks."""
    import asyncio

    from gmqtt import Client as GmqttClient  # type: ignore[import-not-found]
    from gmqtt.mqtt.constants import MQTTv311  # type: ignore[import-not-found]

    received, ready, stop = [0], threading.Event(), threading.Event()

    def on_message(_c: Any, _topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        json.loads(payload)
        received[0] += 1
        return 0

    async def run() -> None:
        client = GmqttClient("bench-gmqtt")
        client.on_message = on_message
        client.on_subscribe = lambda *_: ready.set()
        await client.connect(host, port, keepalive=30, version=MQTTv311)
        client.subscribe("xaso/dev/+/telemetry", qos=1)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await client.disconnect()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    ready.wait(10)
    cpu, before = time.process_time(), received[0]
    try:
        return _measure(lambda: received[0], host, port, args), (
            (time.process_time() - cpu) / max(1, received[0] - before)
        )
    finally:
        stop.set()
        thread.join(10)


def _replica(
    *,
    host: str,
    port: int,
    url: str,
    index: int,
    ready: Any,
    stop: Any,
    out: Any,
    alerts_every_s: float = 0.0,
) -> None:
    """One ingest process: its own engine, Bus and Ingest, as the controller runs them;
    with ``alerts_every_s``, also the alert engine as the fleet service runs it."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    bus = Bus(host, port, "bench", "", client_id=f"bench-ingest-{index}")
    ingest = Ingest(bus, sessions)
    ingest.start()
    bus.start()
    ready.set()
    cpu, wall = time.process_time(), time.monotonic()
    if alerts_every_s:
        engine_ = AlertEngine(sessions)
        while not stop.wait(alerts_every_s):
            engine_.run(time.time_ns() // 1_000_000)
    stop.wait()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    bus.close()  # what the bus still holds is handed over...
    ingest.close()  # ...and written
    s = ingest.stats
    out.put(
        (s.received, s.stored["telemetry"], sum(s.bad.values()), s.dropped, s.batches, cpu, wall)
    )
    engine.dispose()


def ingest(
    host: str, port: int, url: str, processes: int, args: argparse.Namespace
) -> tuple[str, float, float]:
    """Run ``processes`` replicas; returns the phase's report line, its rate, CPU/msg."""
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(processes)]
    procs = [
        ctx.Process(
            target=_replica,
            kwargs={
                "host": host,
                "port": port,
                "url": url,
                "index": n,
                "ready": readies[n],
                "stop": stop,
                "out": out,
                "alerts_every_s": args.alerts_every_s or 0.0,
            },
        )
        for n in range(processes)
    ]
    for p in procs:
        p.start()
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("an ingest replica did not start")
    engine = make_engine(url)

    def rows() -> int:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(TelemetrySample)) or 0)

    before = rows()
    try:
        rate = _measure(rows, host, port, args)
    finally:
        stop.set()
        stats = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
    stored = rows() - before
    engine.dispose()
    received, written, bad, dropped, batches, cpu, wall = (sum(c) for c in zip(*stats, strict=True))
    check = "ok" if written == stored == received - bad and not dropped else "MISMATCH"
    per_msg = cpu / max(1, received)
    return (
        (
            f"{rate:10,.0f} msg/s  {per_msg * 1e6:5.1f} us CPU/msg  "
            f"(received {received:,}, stored {stored:,} rows, bad {bad}, dropped {dropped}, "
            f"{batches:,} batches, {cpu / wall:.2%} of a core: {check})"
        ),
        rate,
        per_msg,
    )


@contextmanager
def _database(args: argparse.Namespace, tmp: str) -> Iterator[str]:
    """The URL to use: --db, a private PostgreSQL cluster (--postgres), or a SQLite file."""
    if args.db:
        yield args.db
    elif args.postgres:
        from tests.postgres import PostgresCluster  # the suite's private cluster, on a free port

        cluster = PostgresCluster().start()
        try:
            yield cluster.create_database()
        finally:
            cluster.stop()
    else:
        yield f"sqlite:///{Path(tmp) / 'controller.db'}"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", help="database URL (default: a SQLite file in a temp dir)")
    where.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per phase")
    parser.add_argument("--rate", type=float, default=20_000, help="offered messages/s in total")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument(
        "--ingest-processes", type=int, default=2, help="replicas of the last phase (0: skip it)"
    )
    parser.add_argument(
        "--qos", type=int, choices=(0, 1), default=0, help="QoS of the stream (1: as events)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="bare and 1-process phases, interleaved, N times"
    )
    parser.add_argument(
        "--gmqtt", action="store_true", help="a bare gmqtt subscriber too (uv pip install gmqtt)"
    )
    parser.add_argument(
        "--idle",
        action="store_true",
        help="1,000 devices every 30 s (33 msg/s), 1 process with the alert engine every 15 s",
    )
    parser.add_argument(
        "--alerts-every-s", type=float, default=None, help="run the alert engine (--idle: 15)"
    )
    args = parser.parse_args()
    if args.idle:
        args.rate, args.publishers, args.ingest_processes = DEVICES / 30, 1, 1
        args.rounds = 1
        if args.alerts_every_s is None:
            args.alerts_every_s = 15.0
    return args


def main() -> int:
    args = _arguments()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="xaso-bench-") as tmp, _database(args, tmp) as url:
        upgrade(url)
        with Mosquitto(Path(tmp) / "broker", persistence=False) as broker:
            rounds = []
            for _ in range(args.rounds):
                bare = chunked = gmqtt = (0.0, 0.0)
                if not args.idle:
                    bare = bare_paho(broker.host, broker.port, args)
                    chunked = bare_paho(broker.host, broker.port, args, chunked=True)
                if args.gmqtt:
                    gmqtt = bare_gmqtt(broker.host, broker.port, args)
                one = ingest(broker.host, broker.port, url, 1, args)
                rounds.append((bare, chunked, gmqtt, one))
            more = None
            if args.ingest_processes > 1:
                n = args.ingest_processes
                more = (n, ingest(broker.host, broker.port, url, n, args))
    dialect = url.split(":", 1)[0].split("+")[0]
    print(
        f"telemetry ingest into {dialect}, {DEVICES} devices, QoS {args.qos}, "
        f"offered {args.rate:,.1f} msg/s, "
        f"{args.seconds:.0f} s window after {WARMUP_S:.0f} s warm-up, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    _report(args, rounds, more)
    return 0


def _report(args: argparse.Namespace, rounds: list[Any], more: Any) -> None:
    capacities = []
    for (bare, bare_cpu), (chunked, chunked_cpu), (gmqtt, gmqtt_cpu), ingested in rounds:
        line, rate, per_msg = ingested
        if not args.idle:
            cost = f"{bare_cpu * 1e6:5.1f} us CPU/msg"
            print(f"bare paho (parse JSON only):  {bare:10,.0f} msg/s  {cost}")
            cost = f"{chunked_cpu * 1e6:5.1f} us CPU/msg"
            print(f"  the same, chunked reads:    {chunked:10,.0f} msg/s  {cost}")
        if args.gmqtt:
            cost = f"{gmqtt_cpu * 1e6:5.1f} us CPU/msg"
            print(f"  the same on gmqtt:          {gmqtt:10,.0f} msg/s  {cost}")
        print(f"Bus + Ingest, 1 process  : {line}")
        if not args.idle:
            capacities.append(bare_cpu / per_msg)
            print(
                f"  rate ingest/bare {rate / bare:.2f}; capacity (CPU/msg bare / ingest) "
                f"{bare_cpu / per_msg:.2f}  (target >= 0.7)"
            )
    if more is not None:
        n, (line, rate, _per_msg) = more
        print(f"Bus + Ingest, {n} processes: {line}")
    if capacities:
        print(f"capacity, median of {len(capacities)}: {statistics.median(capacities):.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
