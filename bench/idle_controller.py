"""The idle controller: its CPU with 1,000 devices sending telemetry every 30 s.

A site of 1,000 speakers (each added with `add_device`: its own password and
ACL lines in a private Mosquitto), and the controller as production runs it,
`python -m cli.main controller` in a process of its own (web app, station,
ingest, fleet service with the alert rules every 15 s), on a SQLite file or a
private PostgreSQL. The devices are simulated in worker processes: each one
its own paho connection with its own credentials, a retained `online` status
as the agent sends on connecting, then a telemetry sample (the agent's
fields) every 30 s, the 1,000 spread evenly over the interval. Real time, not
compressed: a run of ``--seconds`` sees seconds / 30 samples of each device.

The controller's CPU (user + system, psutil) is measured in two windows of
the same run: first with every device connected and silent (what the
controller costs on its own: the fleet service's timers, the web server), then
with the telemetry flowing, after one whole interval of warm-up (every device
seen once). Beside it, over the second window, a bare paho subscriber
(its own process, the controller's credentials) that only parses each
sample: the floor for receiving this stream in Python. Target: the controller
under 1 % of one core with the telemetry.

    .venv/bin/python -m bench.idle_controller [--postgres] [--seconds 180] [--devices 1000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench._swarm import raise_nofile
from cli.brokers.mosquitto import Mosquitto, free_port
from controller.site.devices import add_device
from controller.site.keys import init_site
from edge.config import load_config
from protocol.topics import Topics
from protocol.uplink import Telemetry

INTERVAL_S = 30.0
WORKERS = 2
ROOT = Path(__file__).resolve().parent.parent


def sample(n: int) -> bytes:
    return msgspec.json.encode(
        Telemetry(
            ts=time.time_ns() // 1_000_000,
            uptime_s=1000.0 + n,
            agent_uptime_s=900.0,
            cpu_temp_c=48.5,
            load1=0.3,
            mem_used_pct=41.0,
            disk_free_mb=20_000.0,
            rss_mb=46.0,
            cpu_pct=0.2,
            clip_cache={"count": 12, "bytes": 40_000_000},
            outbox_len=0,
            agent="0.1.0",
        )
    )


def devices_worker(configs: list[str], start: Any, go: Any, stop: Any, ready: Any) -> None:
    """Some devices: connect each with its own credentials, say online, then (once ``go``)
    publish a sample for each every INTERVAL_S, at its own offset in the interval."""
    raise_nofile()
    clients: list[tuple[paho.Client, str]] = []
    for path in configs:
        cfg = load_config(Path(path))
        topics = Topics(cfg.mqtt.root)
        device = cfg.device.id
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id)
        c.username_pw_set(cfg.username, cfg.password())
        c.will_set(topics.status(device), json.dumps({"state": "offline", "ts": 0}), 1, True)
        c.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=cfg.mqtt.keepalive_s)
        c.loop_start()
        online = {"state": "online", "ts": time.time_ns() // 1_000_000, "agent": "0.1.0",
                  "roles": ["speaker"]}  # fmt: skip
        c.publish(topics.status(device), json.dumps(online), qos=1, retain=True)
        clients.append((c, topics.telemetry(device)))
    ready.put(len(clients))
    go.wait()
    start_at, share = start.value, INTERVAL_S / len(clients)
    n = 0
    while not stop.is_set():
        for i, (c, topic) in enumerate(clients):
            due = start_at + n * INTERVAL_S + i * share
            if stop.wait(max(0.0, due - time.time())):
                break
            c.publish(topic, sample(n), qos=0)
        n += 1
    for c, _ in clients:
        c.disconnect()
        c.loop_stop()


def bare_subscriber(host: str, port: int, user: str, password: str, topic: str) -> None:
    """The floor: receive the same stream and parse each sample, nothing else."""
    count = [0]
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.username_pw_set(user, password)
    c.on_message = lambda _c, _u, msg: (json.loads(msg.payload), count.__setitem__(0, count[0] + 1))
    c.connect(host, port, keepalive=60)
    c.subscribe(topic, qos=0)
    c.loop_forever()


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(procs: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    """Percent of one core each process used over ``seconds`` from now."""
    before = {k: cpu_s(p) for k, p in procs.items()}
    t0 = time.monotonic()
    time.sleep(seconds)  # the window itself: nothing is awaited, CPU is counted
    wall = time.monotonic() - t0
    return {k: (cpu_s(p) - before[k]) / wall * 100 for k, p in procs.items()}


def start_controller(
    tmp: Path, site_dir: Path, db_url: str, port: int, http_port: int
) -> tuple[subprocess.Popen[bytes], Any]:
    """`xaso controller` in its own process, as production runs it; its log in ``tmp``."""
    config = tmp / "controller.toml"
    config.write_text(
        "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        f'[site]\ndir = "{site_dir}"\nclips_dir = "{tmp / "clips"}"\n'
        f'[database]\nurl = "{db_url}"\n[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n',
        encoding="utf-8",
    )
    log = (tmp / "controller.log").open("wb")
    controller = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "controller", "--config", str(config)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # the controller answers
        assert controller.poll() is None, (tmp / "controller.log").read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).is_success:
                return controller, log
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the controller did not answer in 120 s")
        time.sleep(0.5)


def run(args: argparse.Namespace, db_url: str, tmp: Path) -> None:
    raise_nofile()
    port, http_port = free_port(), free_port()
    site = init_site(tmp / "site")
    ids = [f"spk-{i:04d}" for i in range(args.devices)]
    t0 = time.monotonic()
    for device in ids:
        add_device(site.dir, device, ["speaker"], ["thon"], broker_host="127.0.0.1",
                   broker_port=port, state_dir=tmp / "state" / device)  # fmt: skip
    print(f"site: {args.devices} speakers provisioned in {time.monotonic() - t0:.1f} s")
    broker = Mosquitto(tmp / "broker", port, password_file=site.passwd_path,
                       acl_file=site.acl_path)  # fmt: skip
    broker.start()
    controller, log = start_controller(tmp, site.dir, db_url, port, http_port)
    ctx = multiprocessing.get_context("spawn")
    go, stop, ready = ctx.Event(), ctx.Event(), ctx.Queue()
    workers: list[Any] = []
    bare: Any = None
    try:
        paths = [str(site.device_config_path(d)) for d in ids]
        start = ctx.Value("d", 0.0)  # the common start of the telemetry, set before ``go``
        workers = [
            ctx.Process(target=devices_worker, args=(paths[i::WORKERS], start, go, stop, ready))
            for i in range(WORKERS)
        ]
        for w in workers:
            w.start()
        connected = 0
        while connected < args.devices:
            connected += ready.get(timeout=600)
        user, password = site.controller_credentials()
        telemetry = Topics(site.root).all_devices("telemetry")
        bare = ctx.Process(
            target=bare_subscriber, args=("127.0.0.1", port, user, password, telemetry)
        )
        bare.start()
        procs = {
            "controller": psutil.Process(controller.pid),
            "bare paho": psutil.Process(bare.pid),
        }
        time.sleep(10)  # the 1,000 online statuses written
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        silent = measure(procs, args.seconds)
        start.value = time.time() + 1
        go.set()
        time.sleep(1 + INTERVAL_S)  # every device seen once
        flowing = measure(procs, args.seconds)
        la = " ".join(f"{v:.2f}" for v in os.getloadavg())
    finally:
        stop.set()
        for w in workers:
            w.join(30)
        if bare is not None:
            bare.terminate()
            bare.join(10)
        controller.terminate()
        controller.wait(30)
        log.close()
        broker.stop()
    report(args, db_url, silent, flowing, la)


def report(
    args: argparse.Namespace,
    db_url: str,
    silent: dict[str, float],
    flowing: dict[str, float],
    la: str,
) -> None:
    dialect = db_url.split(":", 1)[0]
    rate = args.devices / INTERVAL_S
    print(f"{dialect}: {args.devices} devices x telemetry every {INTERVAL_S:.0f} s "
          f"({rate:.1f} msg/s), windows of {args.seconds:.0f} s, real time, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"  {'':<34}{'%core':>8}{'ms CPU per msg':>16}")
    print(f"  {'controller, devices silent':<34}{silent['controller']:>8.3f}")
    per = flowing["controller"] * 10 / rate  # % of a core -> ms of CPU per second, per msg
    print(f"  {'controller, telemetry flowing':<34}{flowing['controller']:>8.3f}{per:>16.3f}")
    bare_per = flowing["bare paho"] * 10 / rate
    print(f"  {'bare paho subscriber (floor)':<34}{flowing['bare paho']:>8.3f}{bare_per:>16.3f}")
    ok = "PASS" if flowing["controller"] < 1.0 else "FAIL"
    print(f"  target: controller < 1 % of a core with the telemetry: {ok}")
    print(f"  load average after: {la}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="a private PostgreSQL cluster")
    parser.add_argument("--seconds", type=float, default=180, help="each window")
    parser.add_argument("--devices", type=int, default=1000)
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
