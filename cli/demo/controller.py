"""The demo's controller: the real web app (`create_app`) served inside the demo's process.

In-process rather than a `xaso controller` child: Ctrl-C reaches one process,
which stops in order (the agents first, so their offline statuses reach
ingest and the console; then the app, whose lifespan closes the bus and
ingest; then the broker), and a killed demo leaves no controller behind.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import tomli_w
import uvicorn

from controller.app import create_app
from controller.auth.accounts import create_user, find_user, set_password
from controller.auth.audit import audit
from controller.deps import AppState
from controller.i18n import Refusal
from controller.radio.schedule_entries import EntryInput
from controller.radio.station import Station
from controller.radio.targets import Target
from controller.settings import load_settings
from plumbing.clock import wall_ms

START_TIMEOUT_S = 30.0
DEMO = "xaso demo"  # who the demo's own changes are recorded as

# One account per role, so a newcomer can see what each may do.
ACCOUNTS = [
    ("admin", "admin", "Quản trị viên"),
    ("phat-thanh", "broadcaster", "Phát thanh viên"),
    ("ky-thuat", "technician", "Kỹ thuật viên"),
    ("can-bo", "officer", "Cán bộ một cửa"),
]


class DemoError(RuntimeError):
    """The controller could not start or reach the broker; the message says which."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    password: str


def write_settings(
    workdir: Path, site_dir: Path, mqtt_port: int, http_port: int, broker_pid: Path | None
) -> Path:
    """The controller's TOML in the work dir: its SQLite file and secret land next to it."""
    mqtt: dict[str, object] = {"host": "127.0.0.1", "port": mqtt_port}
    if broker_pid is not None:  # devices added in the web UI reach Mosquitto by SIGHUP
        mqtt["reload_pid_file"] = str(broker_pid)
    data = {
        "site": {"dir": str(site_dir), "clips_dir": "clips"},
        "http": {"host": "127.0.0.1", "port": http_port},
        "mqtt": mqtt,
    }
    path = workdir / "controller.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


class DemoController:
    """`create_app` on the settings in `config`, under uvicorn in a thread."""

    def __init__(self, config: Path) -> None:
        settings = load_settings(config)
        self.app = create_app(settings)
        self.state: AppState = self.app.state.xaso
        self.url = f"http://{settings.http.host}:{settings.http.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host=settings.http.host, port=settings.http.port, log_level="warning"
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="controller", daemon=True)

    @property
    def station(self) -> Station:
        assert self.state.station is not None  # create_app builds it
        return self.state.station

    def accounts(self) -> list[Account]:
        """One user per role with a new password; a rerun in the same work dir resets them."""
        made = []
        now_ms = wall_ms()
        with self.state.sessions() as db:
            for username, role, name in ACCOUNTS:
                password = secrets.token_urlsafe(12)
                try:
                    set_password(db, self.state.auth.passwords, find_user(db, username), password)
                except Refusal:
                    create_user(
                        db,
                        self.state.auth.passwords,
                        username=username,
                        display_name=name,
                        role=role,
                        password=password,
                        now_ms=now_ms,
                    )
                    audit(
                        db, None, "user.create", f"user:{username}", {"role": role}, actor_name=DEMO
                    )
                made.append(Account(username, role, password))
            db.commit()
        return made

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoError(f"the controller could not serve {self.url} (port taken?)")
            time.sleep(0.05)

    def schedule(self, text: str, label: str, group: str, rrule: str, first: datetime) -> None:
        """Speak `text` into the clip library and schedule it for `group`, as a broadcaster
        would: the calendar shows it and its plays reach the proof-of-play report."""
        station = self.station
        clip = station.library.say(text, created_by=DEMO, title=label)
        entry = EntryInput(
            target_kind="group",
            target_id=group,
            rrule=rrule,
            dtstart=first.isoformat(),
            clip_sha256=clip.sha256,
            label=label,
            item_id="ban-tin-thu",
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not station.connected:  # publishing needs the station's bus
            if time.monotonic() > deadline:
                raise DemoError("the controller could not connect to the broker")
            time.sleep(0.1)
        scheduling = station.scheduling
        existing = [
            e for e in scheduling.entries(Target("group", group)) if e.item_id == entry.item_id
        ]
        if existing:  # a rerun in the same work dir
            made = scheduling.update(existing[0].id, entry, by=DEMO)
        else:
            made = scheduling.create(entry, by=DEMO)
        with self.state.sessions() as db:
            audit(db, None, "clip.say", f"clip:{clip.sha256}", {"title": label}, actor_name=DEMO)
            details = {"entry": made.id, "rrule": rrule, "dtstart": made.dtstart}
            audit(db, None, "schedule.create", f"group:{group}", details, actor_name=DEMO)
            db.commit()

    def stop(self) -> None:
        """The app's lifespan ends: the station's bus and ingest close, then the server."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(30)
