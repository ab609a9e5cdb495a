"""`xaso demo`: a broker, a simulated fleet and the controller on one machine.

Every part is the real one: Mosquitto with the site's passwords and ACL, each
agent in its own process running the production code on simulated hardware,
signed documents and commands from the controller's key, and the controller's
web app (cli/demo/controller.py) with its database, accounts and the
fleet's spoken bulletin in its schedules.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cli.brokers.embedded import EmbeddedBroker, choose_broker
from cli.brokers.mosquitto import Mosquitto, free_port, mosquitto_binary
from cli.brokers.process import BrokerError
from cli.demo.devices import DEMO_PIN, DemoKiosk, Managed, citizen, provision, serving
from controller.site.directory import Site
from controller.site.keys import init_site
from protocol.commands import DEFAULT_TZ
from protocol.errors import Refusal
from protocol.events import (
    AmpState,
    AudioFault,
    PlayFinished,
    PlayMissed,
    PlayRecord,
    PlayStarted,
    PrinterStatus,
    TicketRecord,
    read_body,
)
from protocol.topics import Topics

if TYPE_CHECKING:
    from cli.demo.controller import Account
    from cli.demo.fleet_view import FleetView
    from protocol.uplink import Event

PING_EVERY_S = 15.0
CITIZEN_EVERY_S = 20.0
SPEAKERS_GROUP = "cum-loa"
BULLETIN_LABEL = "Bản tin thử nghiệm"
BULLETIN_VI = (
    "Xin chào bà con. Đây là bản tin thử nghiệm của Đài truyền thanh xã. "
    "Bà con chú ý theo dõi lịch tiêm phòng cho gia súc vào sáng thứ Hai tới."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a broker, a simulated fleet and the controller here")
    p.add_argument("--mqtt-port", type=int, default=None, help="broker port (default: a free one)")
    p.add_argument(
        "--http-port", type=int, default=None, help="controller web port (default: a free one)"
    )
    p.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a new temp dir)"
    )
    p.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "embedded"],
        default="auto",
        help="MQTT broker: Mosquitto when installed, else an embedded one (auto)",
    )
    p.add_argument("--speakers", type=int, default=2, help="simulated speaker clusters (2)")
    p.add_argument("--kiosks", type=int, default=1, help="simulated queue kiosks (1)")
    p.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: Ctrl-C)"
    )
    p.set_defaults(func=run_demo)


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    workdir = (args.dir or Path(tempfile.mkdtemp(prefix="xaso-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _log_to(workdir / "logs" / "controller.log")  # before alembic logs as it is imported
    # imported here: `xaso agent` builds the same parser and must not load a web stack
    from cli.demo.controller import DemoController, DemoError, write_settings
    from cli.demo.fleet_view import FleetView

    mqtt_port = args.mqtt_port or free_port()
    http_port = args.http_port or free_port()
    site = init_site(workdir / "site")
    devices = [
        (f"loa-thon-{i}", ["speaker"], [f"thon-{i}", SPEAKERS_GROUP, "all"])
        for i in range(1, args.speakers + 1)
    ]
    devices += [
        (f"kiosk-mot-cua-{i}", ["kiosk"], ["mot-cua", "all"]) for i in range(1, args.kiosks + 1)
    ]
    agents, kiosks = provision(site, devices, workdir, mqtt_port)

    try:
        kind = choose_broker(args.broker, mosquitto_binary())
    except ValueError as exc:
        print(f"xaso demo: {exc}", file=sys.stderr)
        return 1
    pid_file, ports = _broker_plan(kind, workdir, mqtt_port)
    controller = DemoController(write_settings(workdir, site.dir, ports[1], http_port, pid_file))
    accounts = controller.accounts()
    try:
        broker = _start_broker(kind, site, workdir / "broker", ports, pid_file)
    except BrokerError as exc:
        print(f"xaso demo: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    user, password = site.controller_credentials()
    view = FleetView(
        "127.0.0.1",
        ports[1],
        user,
        password,
        site.signing_key(),
        Topics(site.root),
        on_change=lambda device, state: _say(f"  {device}: {state}"),
        on_event=_print_event,
    )
    code = 0
    try:
        view.start()
        for device, _roles, groups in devices:
            view.send(
                view.topics.dev(device, "config"),
                "config.set",
                {"version": 1, "groups": groups, "telemetry_interval_s": 10},
                retain=True,
            )
        controller.start()
        # the first bulletin 15 s from now, then every minute for an hour (a calendar of
        # 60 rows, and a bounded pile of WAV files)
        first = datetime.now(ZoneInfo(DEFAULT_TZ)).replace(microsecond=0, tzinfo=None)
        controller.schedule(
            BULLETIN_VI,
            BULLETIN_LABEL,
            SPEAKERS_GROUP,
            "FREQ=MINUTELY;COUNT=60",
            first + timedelta(seconds=15),
        )
        for agent in agents:
            agent.start()
        _banner(
            workdir=workdir,
            broker=broker,
            controller_url=controller.url,
            accounts=accounts,
            user=user,
            password=password,
            agents=agents,
            kiosks=kiosks,
        )
        _supervise(view, agents, kiosks, stop, args.duration)
    except DemoError as exc:
        print(f"xaso demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        _say("stopping: agents say offline, then the controller and the broker stop")
        for agent in agents:
            agent.stop()
        for kiosk in kiosks:
            kiosk.printer.close()
        controller.stop()
        view.close()
        broker.stop()
    return code


def _log_to(path: Path) -> None:
    """The process's log (the controller's, alembic's) to a file: the console is the
    demo's narration."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def _broker_plan(kind: str, workdir: Path, mqtt_port: int) -> tuple[Path | None, tuple[int, int]]:
    """Where the broker's pid goes and its ports: the devices', then the controller's.

    Devices added in the web UI reach Mosquitto by a SIGHUP to that pid. Mosquitto
    gives the controller's users a listener of their own (docs/broker-security.md).
    """
    if kind == "mosquitto":
        return workdir / "broker" / "mosquitto.pid", (mqtt_port, free_port())
    return None, (mqtt_port, mqtt_port)


def _start_broker(
    kind: str, site: Site, workdir: Path, ports: tuple[int, int], pid_file: Path | None
) -> Mosquitto | EmbeddedBroker:
    """The site's broker, with its pid written where the controller looks to reload it.

    Each device's client id is bound to its user name; the controller's users keep theirs.
    ``ports``: the devices', then the controller's (the same one for the embedded broker).
    """
    port, controller_port = ports
    users = list(site.meta()["users"])
    passwd, acl = site.passwd_path, site.acl_path
    broker: Mosquitto | EmbeddedBroker
    if kind == "mosquitto":
        broker = Mosquitto(
            workdir,
            port,
            password_file=passwd,
            acl_file=acl,
            controller_port=controller_port,
            controller_users=users,
        )
    else:
        broker = EmbeddedBroker(
            workdir, port, password_file=passwd, acl_file=acl, controller_users=users
        )
    broker.start()
    if pid_file is not None and broker.proc is not None:
        pid_file.write_text(f"{broker.proc.pid}\n", encoding="ascii")
    return broker


ROLE_NOTES = {
    "admin": "everything: users, devices, keys, audit",
    "broadcaster": "clips, schedules, broadcasts, bulletins",
    "technician": "devices: add, settings, test tone",
    "officer": "dashboard, alerts and reports",
}


def _banner(
    *,
    workdir: Path,
    broker: Mosquitto | EmbeddedBroker,
    controller_url: str,
    accounts: list[Account],
    user: str,
    password: str,
    agents: list[Managed],
    kiosks: list[DemoKiosk],
) -> None:
    broker_name = (
        "Mosquitto; queued messages and retained documents are saved to disk"
        if isinstance(broker, Mosquitto)
        else "embedded amqtt broker; it keeps queued messages and retained documents in "
        "memory only: stopped, it forgets them, and what the devices had sent and the "
        "controller had not yet read is lost"
    )
    url = controller_url
    width = max(len(a.username) for a in accounts)
    people = "\n".join(
        f"              {a.username:<{width}}  {a.password}  {a.role:<11}  {ROLE_NOTES[a.role]}"
        for a in accounts
    )
    links = "\n".join(
        f"              {name:<10} {url}{path}"
        for name, path in (
            ("clips", "/clips"),
            ("schedules", "/schedules"),
            ("broadcasts", "/broadcasts"),
            ("alerts", "/alerts"),
            ("reports", "/reports"),
        )
    )
    pages = "".join(
        f"""
  {k.device}  kiosk {k.url}/kiosk   counter {k.url}/counter/1 (PIN {DEMO_PIN})
      hall display {k.url}/display   counter 1's screen {k.url}/display/1
      rating {k.url}/rate/1 (PIN {DEMO_PIN})
      tickets printed as PNG in {k.printer.out_dir}"""
        for k in kiosks
    )
    _say(f"""
Xaso demo — {len(agents)} simulated devices
  controller  dashboard  {url}/   (tiếng Việt; ?lang=en for English)
{links}
  sign in as  user, password, role:
{people}
  broker      mqtt://{broker.host}:{broker.port}  (passwords and ACL from the site)
              {broker_name}
  work dir    {workdir}   (controller.toml, controller.db, clips/, played/)
  watch it    mosquitto_sub -h {broker.host} -p {broker.port} -u {user} -P '{password}' \\
                -t 'xaso/#' -v
  devices     {", ".join(a.device for a in agents)}
              (logs, the controller's too, in {workdir / "logs"}){pages}
Ctrl-C stops everything.
""")


def _supervise(
    view: FleetView,
    agents: list[Managed],
    kiosks: list[DemoKiosk],
    stop: threading.Event,
    duration: float,
) -> None:
    deadline = time.monotonic() + duration if duration > 0 else None
    next_ping = time.monotonic() + PING_EVERY_S  # or sooner: once every agent is online
    pinged = False
    next_citizen, citizens = time.monotonic() + 5, 0
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            break
        for agent in agents:
            if agent.proc is not None and agent.proc.poll() is not None:
                code = agent.proc.returncode
                _say(f"  {agent.device}: agent exited ({code}); restarting")
                agent.start()
        if time.monotonic() >= next_ping or (not pinged and _all_online(view, agents)):
            next_ping, pinged = time.monotonic() + PING_EVERY_S, True
            _ping_all(view, agents)
        if kiosks and time.monotonic() >= next_citizen:
            if not all(serving(k) for k in kiosks):  # not started yet: look again shortly
                next_citizen = time.monotonic() + 1
                continue
            next_citizen = time.monotonic() + CITIZEN_EVERY_S
            for kiosk in kiosks:
                citizen(kiosk, citizens)
            citizens += 1


def _all_online(view: FleetView, agents: list[Managed]) -> bool:
    online = {d["id"] for d in view.snapshot() if d["state"] == "online"}
    return all(a.device in online for a in agents)


def _print_event(device: str, event: Event) -> None:
    try:
        body = read_body(event.type, event.body)
    except Refusal as exc:
        _say(f"  {device}: {event.type} ({exc})")
        return
    if isinstance(body, PlayRecord):
        extra = ""
        if isinstance(body, PlayFinished):
            extra = body.outcome
        elif isinstance(body, PlayMissed):
            extra = body.reason
        elif isinstance(body, PlayStarted) and body.planned_ms:
            extra = f"({body.actual_ms - body.planned_ms:+.0f} ms from plan)"
        _say(f"  {device}: {event.type} {body.label or body.key} {extra}".rstrip())
    elif isinstance(body, AmpState | AudioFault | PrinterStatus):
        _say(f"  {device}: {event.type} {event.body}")
    elif isinstance(body, TicketRecord):
        counter = getattr(body, "counter", None)
        at = f" → quầy {counter}" if counter else ""
        _say(f"  {device}: {event.type} {body.number}{at}")


def _ping_all(view: FleetView, agents: list[Managed]) -> None:
    """A signed ping to the group every device is in; print each round trip."""
    cmd_id = uuid.uuid4().hex
    waiters = {a.device: view.expect_ack(a.device, cmd_id) for a in agents}
    sent = time.monotonic()
    view.send(view.topics.grp("all", "cmd"), "device.ping", {}, cmd_id=cmd_id)
    parts = []
    for device, waiter in waiters.items():
        if waiter.done.wait(max(0.0, 5 - (time.monotonic() - sent))):
            parts.append(f"{device} {(waiter.at - sent) * 1000:.0f} ms")
        else:
            parts.append(f"{device} no answer")
    _say("  ping: " + ", ".join(parts))
