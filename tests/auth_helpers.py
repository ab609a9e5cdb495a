"""The auth tests' app: a hand-moved clock, users added directly, signing in like a browser.

The `controller` fixture (tests/conftest.py) builds a `Controller` on each
`database_url`, with one admin (`ADMIN_PASSWORD`); `signed_in` gives its browser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from controller.auth.accounts import create_user
from controller.db.auth_tables import AuditEntry

ADMIN_PASSWORD = "mat-khau-quan-tri"


class Clock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Controller:
    app: FastAPI
    clock: Clock
    url: str

    def client(self) -> TestClient:
        return TestClient(self.app)

    def add_user(self, username: str, role: str, password: str = "mot-mat-khau-dai") -> None:
        state = self.app.state.xaso
        with state.sessions() as db:
            create_user(
                db,
                state.auth.passwords,
                username=username,
                display_name=username.title(),
                role=role,
                password=password,
                now_ms=state.now_ms(),
            )
            db.commit()

    def audit(self) -> list[AuditEntry]:
        with self.app.state.xaso.sessions() as db:
            return list(db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def write_config(tmp_path: Path, database_url: str, time_cost: int = 1) -> Path:
    """A configuration with a cheap argon2 (tests sign in often) and a low address limit."""
    config = tmp_path / "controller.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n[site]\ndir = "site"\n'
        f"[security]\nargon2_time_cost = {time_cost}\nargon2_memory_kib = 1024\n"
        "argon2_parallelism = 1\nlogin_ip_max_failures = 8\n",
        encoding="utf-8",
    )
    return config


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str) -> Any:
    page = client.get("/login")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": form_csrf(page.text)},
        follow_redirects=False,
    )


def session_csrf(client: TestClient) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert match
    return match.group(1)


def signed_in(ctl: Controller, username: str = "admin", password: str = ADMIN_PASSWORD) -> Any:
    client = ctl.client()
    assert sign_in(client, username, password).status_code == 303
    client.headers["X-CSRF-Token"] = session_csrf(client)
    return client


def bilingual(response: Any, code: str) -> None:
    body = response.json()
    assert body["code"] == code, body
    assert body["vi"] and body["en"] and body["vi"] != body["en"]
    assert body["detail"] == f"{body['vi']} / {body['en']}"
