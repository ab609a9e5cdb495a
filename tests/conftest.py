"""Shared fixtures: a provisioned site, a real Mosquitto on a free port, agents; a player."""

from __future__ import annotations

import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import tomli_w

from cli.brokers.mosquitto import Mosquitto, free_port
from controller.site.devices import add_device
from controller.site.directory import Site
from controller.site.keys import init_site
from plumbing.validation import convert
from protocol.envelope import seal
from protocol.signing import SigningKey
from tests.fleet import AgentProcess, Probe
from tests.postgres import PostgresCluster

if TYPE_CHECKING:
    from tests.auth_helpers import Controller
    from tests.broadcast_api_helpers import Ctl
    from tests.player_helpers import Clips, Rig

DEVICES = {
    "loa-1": (["speaker"], ["thon-1", "all"]),
    "loa-2": (["speaker"], ["thon-2", "all"]),
    "loa-3": (["speaker"], ["thon-1", "all"]),
    "kiosk-1": (["kiosk"], []),
}
FAST = {"mqtt": {"reconnect_min_s": 0.2, "reconnect_max_s": 2.0}, "telemetry": {"interval_s": 2}}


class Fleet:
    """A provisioned site and the agents started from it in one test."""

    def __init__(self, tmp: Path, site: Site, broker: Mosquitto) -> None:
        self.tmp = tmp
        self.site = site
        self.broker = broker
        self.key = site.signing_key()
        self.other_key = SigningKey.generate()
        self.processes: list[AgentProcess] = []
        self.probes: list[Probe] = []

    def seal(self, msg_type: str, body: dict[str, Any], *, to: str, **kw: Any) -> bytes:
        """Signed for topic ``to``: an agent refuses it anywhere else (``wrong_target``)."""
        return seal(msg_type, body, self.key, time.time_ns() // 1_000_000, to=to, **kw)

    def config(
        self,
        device: str,
        telemetry_interval_s: float | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
        **mqtt: Any,
    ) -> Path:
        """The device's generated config, with test timings and a private state dir."""
        data = tomllib.loads(self.site.device_config_path(device).read_text())
        for section, values in {**FAST, **(sections or {})}.items():
            data.setdefault(section, {}).update(values)
        data["mqtt"].update(mqtt)
        if telemetry_interval_s is not None:
            data["telemetry"]["interval_s"] = telemetry_interval_s
        data["state"] = {"dir": str(self.tmp / "state" / device)}
        path = self.tmp / f"{device}.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    def spawn(self, device: str, **kw: Any) -> AgentProcess:
        proc = AgentProcess(self.config(device, **kw), self.tmp / f"{device}.log").start()
        self.processes.append(proc)
        return proc

    def event_writer(
        self, device: str, written: Path, *pace: float | int, **mqtt: Any
    ) -> AgentProcess:
        """An agent writing events (tests/drivers/write_events.py); ``pace``: seconds
        between events, and how many to write."""
        config = self.config(device, **mqtt)
        argv = [
            sys.executable,
            "-m",
            "tests.drivers.write_events",
            str(config),
            str(written),
            *map(str, pace),
        ]
        proc = AgentProcess(config, self.tmp / f"{device}-writer.log", argv)
        self.processes.append(proc)
        return proc

    def probe(self, as_device: str | None = None, subscribe: str = "xaso/#") -> Probe:
        if as_device is None:
            user, password = self.site.controller_credentials()
        else:
            data = tomllib.loads(self.site.device_config_path(as_device).read_text())
            user, password = data["mqtt"]["username"], data["mqtt"]["password"]
        p = Probe(self.broker.host, self.broker.port, user, password, subscribe)
        self.probes.append(p)
        return p

    def close(self) -> None:
        for proc in self.processes:
            proc.stop()
        for p in self.probes:
            p.close()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return init_site(tmp_path / "site")


@pytest.fixture
def broker(tmp_path: Path, site: Site) -> Iterator[Mosquitto]:
    port = free_port()
    for device, (roles, groups) in DEVICES.items():
        add_device(
            site.dir,
            device,
            roles,
            groups,
            broker_host="127.0.0.1",
            broker_port=port,
            office_address="192.168.1.21" if "kiosk" in roles else "",
        )
    mosquitto = Mosquitto(
        tmp_path / "broker", port, password_file=site.passwd_path, acl_file=site.acl_path
    )
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def fleet(tmp_path: Path, site: Site, broker: Mosquitto) -> Iterator[Fleet]:
    f = Fleet(tmp_path, site, broker)
    yield f
    f.close()


@pytest.fixture
def probe(fleet: Fleet) -> Probe:
    return fleet.probe()


@pytest.fixture
def radio(fleet: Fleet, site: Site, tmp_path: Path) -> Iterator[Any]:
    """A speaker agent to spawn (tests/test_speaker.py `Radio`) and a clip server for it."""
    from fastapi import FastAPI

    from controller.radio.clip_server import clip_router, site_authenticator
    from tests.http_helpers import serve
    from tests.test_speaker import Radio

    clip_dir = tmp_path / "clips-served"
    clip_dir.mkdir()
    app = FastAPI()
    app.include_router(clip_router(clip_dir, site_authenticator(site.dir)))
    with serve(app) as base:
        yield Radio(fleet, base, clip_dir, tmp_path)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controller.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


@pytest.fixture
def controller(tmp_path: Path, database_url: str) -> Iterator[Controller]:
    """The auth tests' app (tests/auth_helpers.py) on `database_url`, with an admin."""
    from controller.app import create_app
    from controller.settings import load_settings
    from tests.auth_helpers import ADMIN_PASSWORD, Clock, Controller, write_config

    clock = Clock()
    app = create_app(load_settings(write_config(tmp_path, database_url)), clock=clock)
    ctl = Controller(app, clock, database_url)
    ctl.add_user("admin", "admin", ADMIN_PASSWORD)
    yield ctl
    app.state.xaso.engine.dispose()


@pytest.fixture
def offline(tmp_path: Path, database_url: str, site: Site) -> Iterator[Ctl]:
    """The app with its fleet registered and no broker anywhere (nothing listens on the port)."""
    from tests.broadcast_api_helpers import Ctl, make_app, register

    register(site)
    app = make_app(tmp_path, database_url, site, free_port())
    yield Ctl(app, tmp_path)
    app.state.xaso.engine.dispose()


# --- the queue kiosk: a printer on a real pseudo-terminal, and a kiosk built around it ---


class KioskClock:
    """The kiosk's clock in tests: Monday 23 November 2026, 09:00 in Hà Nội, moved by hand."""

    def __init__(self) -> None:
        self.ms = 1_795_399_200_000  # 2026-11-23T09:00:00+07:00

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def virtual_printer(tmp_path: Path) -> Iterator[Any]:
    from kiosk.virtual_printer import VirtualPrinter

    printer = VirtualPrinter(tmp_path / "printed").start()
    yield printer
    printer.close()


@pytest.fixture
def make_kiosk(tmp_path: Path, virtual_printer: Any) -> Iterator[Any]:
    """A started Kiosk on the virtual printer, recording its events; closed after the test."""
    from kiosk.config import KioskSection
    from kiosk.service import Kiosk

    made: list[Kiosk] = []

    def make(events: list[tuple[str, dict[str, Any]]] | None = None, **overrides: Any) -> Kiosk:
        settings = {
            "printer_url": virtual_printer.path,
            "status_poll_s": 0.1,
            "voice": "off",
            "web_port": free_port(),
            "web_host": "127.0.0.1",
            **overrides,
        }
        extra: dict[str, Any] = {}
        extra.update(
            {
                k: settings.pop(k)
                for k in ("pin_factory", "player", "serve", "clock", "device_id")
                if k in settings
            }
        )
        record = events if events is not None else []
        emit = settings.pop("emit", None) or (lambda body: record.append((body.TYPE, body.wire())))
        kiosk = Kiosk(
            convert(settings, KioskSection, strict=False),
            tmp_path / "kiosk-state",
            emit,
            extra.pop("clock", None) or KioskClock(),
            **extra,
        )
        kiosk.start()
        made.append(kiosk)
        return kiosk

    (tmp_path / "kiosk-state").mkdir()
    yield make
    for kiosk in made:
        kiosk.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    """The player tests' tones, made by ffmpeg once per module."""
    from tests.player_helpers import tone

    d = tmp_path_factory.mktemp("clips")
    return {
        "a440": tone(d / "a440.mp3", 440, 0.6),
        "b880": tone(d / "b880.wav", 880, 0.4),
        "long440": tone(d / "long440.mp3", 440, 2.0),
        "e1000": tone(d / "e1000.ogg", 1000, 0.5),
        "short660": tone(d / "short660.wav", 660, 0.3),
        "radio440": tone(d / "radio440.mp3", 440, 4.0),
    }


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A Player on a WAV-file sink, its events collected; closed after the test."""
    from tests.player_helpers import Rig

    r = Rig(tmp_path)
    yield r
    r.player.close()
