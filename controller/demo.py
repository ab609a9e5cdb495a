"""`xaso demo`: a broker, a simulated fleet and the controller's view on one machine.

Every part is the real one: Mosquitto with the site's passwords and ACL, each
agent in its own process running the production code on simulated hardware,
signed documents and commands from the controller's key.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import tomli_w

from controller import provisioning
from controller.broker_process import BrokerError
from controller.embedded_broker import EmbeddedBroker, choose_broker
from controller.mosquitto import Mosquitto, free_port, mosquitto_binary
from protocol.commands import DEFAULT_TZ
from protocol.topics import Topics

if TYPE_CHECKING:
    from controller.fleet_view import FleetView
    from kiosk.virtual_printer import VirtualPrinter
    from protocol.uplink import Event

EXIT_RESTART = 75  # the agent asks to be restarted (device.restart_agent)
PING_EVERY_S = 15.0
SPEAKERS_GROUP = "cum-loa"
BULLETIN_VI = (
    "Xin chào bà con. Đây là bản tin thử nghiệm của Đài truyền thanh xã. "
    "Bà con chú ý theo dõi lịch tiêm phòng cho gia súc vào sáng thứ Hai tới."
)


@dataclass
class Managed:
    """One agent process that the demo restarts when it exits, as systemd would."""

    device: str
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "agent", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _simulated_speaker(config: Path, played: Path) -> None:
    """The demo's speakers play into WAV files, with a relay on a mock GPIO pin."""
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    data["speaker"] = {"sink": "wav", "wav_dir": str(played), "amp_pin": 17, "amp_hold_s": 5.0}
    config.write_text(tomli_w.dumps(data), encoding="utf-8")


ALL_DAY = {"hours": [["00:00", "24:00"]], "weekdays": [0, 1, 2, 3, 4, 5, 6]}
DEMO_SERVICES = [
    {"code": "ho-tich", "name_vi": "Hộ tịch", "name_en": "Civil status", "prefix": "A"},
    {"code": "dat-dai", "name_vi": "Đất đai", "name_en": "Land", "prefix": "B"},
    {"code": "chung-thuc", "name_vi": "Chứng thực", "name_en": "Certification", "prefix": "C"},
]
CITIZEN_EVERY_S = 20.0


@dataclass
class DemoKiosk:
    """A kiosk's web address and its thermal printer, simulated on a pseudo-terminal."""

    device: str
    url: str
    printer: VirtualPrinter


def _simulated_kiosk(config: Path, device: str, workdir: Path) -> DemoKiosk:
    """Open all day; the printer is a pty whose tickets become PNGs; calls go to a WAV sink."""
    from kiosk.virtual_printer import VirtualPrinter

    printer = VirtualPrinter(workdir / "printed" / device).start()
    port = free_port()
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    data["kiosk"] = {
        "office": "UBND xã Tân Phú - Bộ phận một cửa",
        "services": [s | ALL_DAY for s in DEMO_SERVICES],
        "counters": 3,
        "printer_url": printer.path,
        "status_poll_s": 1.0,
        "web_host": "127.0.0.1",
        "web_port": port,
        "voice": "wav",
        "wav_dir": str(workdir / "played" / device),
    }
    config.write_text(tomli_w.dumps(data), encoding="utf-8")
    return DemoKiosk(device, f"http://127.0.0.1:{port}", printer)


def _citizen(kiosk: DemoKiosk, n: int) -> None:
    """A citizen takes a number and counter 1 calls the next one: a printed ticket, a call."""
    for path, body in (
        ("/api/tickets", {"service": DEMO_SERVICES[n % len(DEMO_SERVICES)]["code"]}),
        ("/api/counters/1/next", {}),
    ):
        req = urllib.request.Request(  # noqa: S310 - the kiosk's own http://127.0.0.1 address
            kiosk.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(req, timeout=5).close()  # noqa: S310
        except OSError as exc:
            _say(f"  {kiosk.device}: {path} failed: {exc}")
            return


def _bulletin(workdir: Path, base_url: str) -> dict[str, object]:
    """A spoken Vietnamese bulletin, made offline and prepared like any upload."""
    from broadcast.clips import ClipSettings
    from broadcast.tts import EspeakEngine, speak_to_clip

    clip = speak_to_clip(BULLETIN_VI, EspeakEngine(), workdir / "clips", ClipSettings())
    return clip.ref(f"{base_url}/api/clips/{clip.sha256}").model_dump()


def _schedule_every_minute(clip: dict[str, object]) -> dict[str, object]:
    # the first bulletin 15 s after start, then every minute
    first = datetime.now(ZoneInfo(DEFAULT_TZ)).replace(microsecond=0, tzinfo=None)
    return {
        "version": int(time.time()),
        "tz": DEFAULT_TZ,
        "items": [
            {
                "id": "ban-tin-thu",
                "label": "Bản tin thử nghiệm",
                "clip": clip,
                "priority": 2,
                "rrule": "FREQ=MINUTELY;INTERVAL=1",
                "dtstart": (first + timedelta(seconds=15)).isoformat(),
            }
        ],
    }


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a broker, a simulated fleet and the fleet page here")
    p.add_argument("--mqtt-port", type=int, default=None, help="broker port (default: a free one)")
    p.add_argument("--http-port", type=int, default=None, help="web port (default: a free one)")
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


def _provision(
    site: provisioning.Site,
    devices: list[tuple[str, list[str], list[str]]],
    workdir: Path,
    mqtt_port: int,
) -> tuple[list[Managed], list[DemoKiosk]]:
    """Each device as an operator adds it, then set up on simulated hardware."""
    agents, kiosks = [], []
    for device, roles, groups in devices:
        config = provisioning.add_device(
            site.dir,
            device,
            roles,
            groups,
            broker_host="127.0.0.1",
            broker_port=mqtt_port,
            state_dir=workdir / "state" / device,
            force=True,
        )
        if "speaker" in roles:
            _simulated_speaker(config, workdir / "played" / device)
        if "kiosk" in roles:
            kiosks.append(_simulated_kiosk(config, device, workdir))
        agents.append(Managed(device, config, workdir / "logs" / f"{device}.log"))
    return agents, kiosks


def run_demo(args: argparse.Namespace) -> int:
    # imported here: `xaso agent` builds the same parser and must not load a web stack
    import uvicorn

    from controller.clip_server import clip_router, site_authenticator
    from controller.fleet_view import FleetView
    from controller.status_page import create_app

    workdir = (args.dir or Path(tempfile.mkdtemp(prefix="xaso-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    mqtt_port = args.mqtt_port or free_port()
    http_port = args.http_port or free_port()
    site = provisioning.init_site(workdir / "site")
    devices = [
        (f"loa-thon-{i}", ["speaker"], [f"thon-{i}", SPEAKERS_GROUP, "all"])
        for i in range(1, args.speakers + 1)
    ]
    devices += [
        (f"kiosk-mot-cua-{i}", ["kiosk"], ["mot-cua", "all"]) for i in range(1, args.kiosks + 1)
    ]
    agents, kiosks = _provision(site, devices, workdir, mqtt_port)
    (workdir / "logs").mkdir(exist_ok=True)

    try:
        kind = choose_broker(args.broker, mosquitto_binary())
        runner = Mosquitto if kind == "mosquitto" else EmbeddedBroker
        broker = runner(
            workdir / "broker", mqtt_port, password_file=site.passwd_path, acl_file=site.acl_path
        )
        broker.start()
    except (BrokerError, ValueError) as exc:
        print(f"xaso demo: {exc}", file=sys.stderr)
        return 1
    user, password = site.controller_credentials()
    view = FleetView(
        "127.0.0.1",
        mqtt_port,
        user,
        password,
        site.signing_key(),
        Topics(site.root),
        on_change=lambda device, state: _say(f"  {device}: {state}"),
        on_event=_print_event,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    app = create_app(view)
    app.include_router(clip_router(workdir / "clips", site_authenticator(site.dir)))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning")
    )
    web = threading.Thread(target=server.run, name="web", daemon=True)
    try:
        view.start()
        for device, _roles, groups in devices:
            view.send(
                view.topics.dev(device, "config"),
                "config.set",
                {"version": 1, "groups": groups, "telemetry_interval_s": 10},
                retain=True,
            )
        web.start()
        clip = _bulletin(workdir, f"http://127.0.0.1:{http_port}")
        view.send(
            view.topics.grp(SPEAKERS_GROUP, "schedule"),
            "schedule.set",
            _schedule_every_minute(clip),
            retain=True,
        )
        for agent in agents:
            agent.start()
        _banner(
            workdir=workdir,
            broker=broker,
            http_port=http_port,
            user=user,
            password=password,
            agents=agents,
            kiosks=kiosks,
        )
        _supervise(view, agents, kiosks, stop, args.duration)
    finally:
        _say("stopping: agents say offline, then the broker stops")
        for agent in agents:
            agent.stop()
        for kiosk in kiosks:
            kiosk.printer.close()
        server.should_exit = True
        view.close()
        broker.stop()
    return 0


def _banner(
    *,
    workdir: Path,
    broker: Mosquitto | EmbeddedBroker,
    http_port: int,
    user: str,
    password: str,
    agents: list[Managed],
    kiosks: list[DemoKiosk],
) -> None:
    broker_name = "Mosquitto" if isinstance(broker, Mosquitto) else "embedded amqtt broker"
    pages = "".join(
        f"""
  {k.device}  kiosk {k.url}/kiosk   counter {k.url}/counter/1
      hall display {k.url}/display   rating {k.url}/rate/1
      tickets printed as PNG in {k.printer.out_dir}"""
        for k in kiosks
    )
    _say(f"""
Xaso demo — {len(agents)} simulated devices
  broker      mqtt://{broker.host}:{broker.port}  ({broker_name}, passwords and ACL from the site)
  fleet page  http://127.0.0.1:{http_port}/   (JSON: /api/devices)
  work dir    {workdir}
  watch it    mosquitto_sub -h {broker.host} -p {broker.port} -u {user} -P '{password}' \\
                -t 'xaso/#' -v
  devices     {", ".join(a.device for a in agents)}  (logs in {workdir / "logs"}){pages}
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
    next_ping = time.monotonic() + 3
    next_citizen, citizens = time.monotonic() + 5, 0
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            break
        for agent in agents:
            if agent.proc is not None and agent.proc.poll() is not None:
                code = agent.proc.returncode
                _say(f"  {agent.device}: agent exited ({code}); restarting")
                agent.start()
        if time.monotonic() >= next_ping:
            next_ping = time.monotonic() + PING_EVERY_S
            _ping_all(view, agents)
        if kiosks and time.monotonic() >= next_citizen:
            next_citizen = time.monotonic() + CITIZEN_EVERY_S
            for kiosk in kiosks:
                _citizen(kiosk, citizens)
            citizens += 1


def _print_event(device: str, event: Event) -> None:
    body = event.body
    if event.type.startswith("play."):
        what = body.get("label") or body.get("key", "")
        extra = body.get("outcome") or body.get("reason") or ""
        late = ""
        if event.type == "play.started" and body.get("planned_ms"):
            late = f" ({body['actual_ms'] - body['planned_ms']:+.0f} ms from plan)"
        _say(f"  {device}: {event.type} {what} {extra}{late}".rstrip())
    elif event.type in ("amp.state", "audio.fault", "printer.status"):
        _say(f"  {device}: {event.type} {body}")
    elif event.type.startswith("ticket."):
        counter = f" → quầy {body['counter']}" if body.get("counter") else ""
        _say(f"  {device}: {event.type} {body.get('number', '')}{counter}")


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
