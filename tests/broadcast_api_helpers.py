"""The broadcasting API tests' app: a user and an API token per role, and the calls they make.

The `offline` fixture (tests/conftest.py) is this app with no broker; the
`online` one (test_controller_broadcast_api.py) runs it against a real Mosquitto.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.db.auth_tables import AuditEntry
from controller.settings import load_settings
from controller.site.devices import add_device
from controller.site.directory import Site
from tests.conftest import DEVICES

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
PASSWORD = "mot-mat-khau-dai"
ROLES = ("admin", "broadcaster", "technician", "officer")


class Ctl:
    """The app, a user and an API token per role, and the calls tests make."""

    def __init__(self, app: FastAPI, tmp: Path) -> None:
        self.app, self.tmp = app, tmp
        self.tokens: dict[str, str] = {}
        state = app.state.xaso
        with state.sessions() as db:
            for role in ROLES:
                user = create_user(
                    db,
                    state.auth.passwords,
                    username=role,
                    display_name=role.title(),
                    role=role,
                    password=PASSWORD,
                    now_ms=state.now_ms(),
                )
                owner = Principal("user", user.id, role, role, Role(role), PERMISSIONS[Role(role)])
                self.tokens[role], _ = create_token(
                    db, owner, f"{role}-token", role, state.now_ms()
                )
            db.commit()
        self.client = TestClient(app)

    @property
    def station(self) -> Any:
        return self.app.state.xaso.station

    def call(self, role: str, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def upload(self, role: str, path: Path, title: str) -> Any:
        with path.open("rb") as f:
            return self.call(
                role, "POST", "/api/clips", files={"file": (path.name, f)}, data={"title": title}
            )

    def audit(self) -> list[AuditEntry]:
        with self.app.state.xaso.sessions() as db:
            return list(db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def make_app(
    tmp: Path, database_url: str, site: Site, mqtt_port: int, http_port: int | None = None
) -> FastAPI:
    """``http_port``: where agents download clips from, the port it is then served on."""
    http = f"[http]\nport = {http_port}\n" if http_port else ""
    config = tmp / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{site.dir}"\nclips_dir = "{tmp / "clips"}"\n'
        f'[database]\nurl = "{database_url}"\n[mqtt]\nport = {mqtt_port}\n{http}',
        encoding="utf-8",
    )
    return create_app(load_settings(config))


def register(site: Site, port: int = 1883) -> None:
    for device, (roles, groups) in DEVICES.items():
        add_device(site.dir, device, roles, groups, broker_host="127.0.0.1", broker_port=port)


def refused(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """A bilingual refusal: Vietnamese and English, and the status and code expected."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["vi"] and body["en"] and body["vi"] != body["en"], body
    assert body["detail"] == f"{body['vi']} / {body['en']}"
    if code is not None:
        assert body["code"] == code, body
    return body


def group(name: str) -> list[dict[str, str]]:
    return [{"kind": "group", "id": name}]


def entry(clip: str, **kw: Any) -> dict[str, Any]:
    return {
        "target": {"kind": "group", "id": "thon-1"},
        "clip_sha256": clip,
        "dtstart": "2030-01-06T06:30:00",
        "rrule": "FREQ=DAILY",
        "label": "Bản tin sáng",
        **kw,
    }


def wait_connected(state: Any, timeout_s: float = 30.0) -> None:
    """Block until the app's station is on its broker (a loaded machine: generous)."""
    deadline = time.monotonic() + timeout_s
    while not state.station.connected:
        assert time.monotonic() < deadline, "the station did not connect"
        time.sleep(0.05)
