"""The demo's simulated hardware: agent processes, WAV speakers, kiosks with a virtual printer.

Each device is provisioned as an operator would (`xaso device add`), then its
configuration is pointed at simulated parts; the agent itself is the real one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from cli.brokers.mosquitto import free_port
from controller.site.devices import add_device
from controller.site.directory import Site

if TYPE_CHECKING:
    from kiosk.virtual_printer import VirtualPrinter


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
                [sys.executable, "-m", "cli.main", "agent", "--config", str(self.config)],
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


def simulated_speaker(config: Path, played: Path) -> None:
    """The demo's speakers play into WAV files, with a relay on a mock GPIO pin."""
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    data["speaker"] = {"sink": "wav", "wav_dir": str(played), "amp_pin": 17, "amp_hold_s": 5.0}
    config.write_text(tomli_w.dumps(data), encoding="utf-8")


DEMO_OFFICER, DEMO_PIN = "can-bo-demo", "1234"  # printed with the demo's pages
ALL_DAY = {"hours": [["00:00", "24:00"]], "weekdays": [0, 1, 2, 3, 4, 5, 6]}
DEMO_SERVICES = [
    {"code": "ho-tich", "name_vi": "Hộ tịch", "name_en": "Civil status", "prefix": "A"},
    {"code": "dat-dai", "name_vi": "Đất đai", "name_en": "Land", "prefix": "B"},
    {"code": "chung-thuc", "name_vi": "Chứng thực", "name_en": "Certification", "prefix": "C"},
]


@dataclass
class DemoKiosk:
    """A kiosk's web address and its thermal printer, simulated on a pseudo-terminal."""

    device: str
    url: str
    printer: VirtualPrinter
    counter_headers: dict[str, str] | None = None  # counter 1's sign-in, once made


def simulated_kiosk(config: Path, device: str, workdir: Path) -> DemoKiosk:
    """Open all day; the printer is a pty whose tickets become PNGs; calls go to a WAV sink."""
    from kiosk.officers import hash_pin
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
        "officers": [{"id": DEMO_OFFICER, "name": "Cán bộ demo", "pin_hash": hash_pin(DEMO_PIN)}],
    }
    config.write_text(tomli_w.dumps(data), encoding="utf-8")
    return DemoKiosk(device, f"http://127.0.0.1:{port}", printer)


def serving(kiosk: DemoKiosk) -> bool:
    """The kiosk's pages answer: its agent has started them (slower on a busy machine)."""
    try:
        urllib.request.urlopen(kiosk.url + "/api/state", timeout=5).close()  # noqa: S310
    except OSError:
        return False
    return True


def _post(url: str, body: dict[str, object], headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(  # noqa: S310 - the kiosk's own http://127.0.0.1 address
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        return resp.headers, json.loads(resp.read())


def sign_in(url: str, counter: int) -> dict[str, str]:
    """The demo officer's session at ``counter``: the cookie and CSRF headers of a change."""
    headers, body = _post(
        f"{url}/api/counters/{counter}/session", {"officer": DEMO_OFFICER, "pin": DEMO_PIN}
    )
    return {"Cookie": headers["Set-Cookie"].split(";", 1)[0], "X-CSRF-Token": body["csrf"]}


def citizen(kiosk: DemoKiosk, n: int) -> None:
    """A citizen takes a number and counter 1 calls the next one: a printed ticket, a call."""
    service = DEMO_SERVICES[n % len(DEMO_SERVICES)]["code"]
    try:
        _post(kiosk.url + "/api/tickets", {"service": service})
        kiosk.counter_headers = kiosk.counter_headers or sign_in(kiosk.url, 1)
        _post(kiosk.url + "/api/counters/1/next", {}, kiosk.counter_headers)
    except OSError as exc:
        kiosk.counter_headers = None  # signed out by a restart of the kiosk: sign in again
        print(f"  {kiosk.device}: a citizen's turn failed: {exc}", flush=True)


def provision(
    site: Site,
    devices: list[tuple[str, list[str], list[str]]],
    workdir: Path,
    mqtt_port: int,
) -> tuple[list[Managed], list[DemoKiosk]]:
    """Each device as an operator adds it, then set up on simulated hardware."""
    agents, kiosks = [], []
    for device, roles, groups in devices:
        config = add_device(
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
            simulated_speaker(config, workdir / "played" / device)
        if "kiosk" in roles:
            kiosks.append(simulated_kiosk(config, device, workdir))
        agents.append(Managed(device, config, workdir / "logs" / f"{device}.log"))
    return agents, kiosks
