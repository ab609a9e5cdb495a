"""Alerts end to end: a real Mosquitto, `xaso controller` in its own process, real agents.

A speaker agent is killed: its offline alert fires once the limit has passed,
shows over the API and on the alerts page, and clears when the agent comes
back, and a real webhook receiver gets the raise, then the clear. A kiosk
agent's virtual printer runs out of paper: a paper-out alert.
On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.brokers.mosquitto import free_port
from kiosk.virtual_printer import VirtualPrinter
from tests.conftest import Fleet
from tests.fleet import ROOT
from tests.test_kiosk_broker import open_now
from tests.webhook_helpers import Receiver

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
# Ingest writes last_seen_ms at most every 10 s: the limit must be longer than that.
OFFLINE_AFTER_MIN = 0.3


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 90) -> Any:
    """Poll until `check()` is truthy; the deadline only stops a broken run from hanging."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.3)


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def controller(
    fleet: Fleet, tmp_path: Path, database_url: str, webhook: Receiver
) -> Iterator[httpx.Client]:
    """`xaso controller` on the fleet's site and broker, posting its alerts to `webhook`,
    and a client signed in as a technician."""
    port = free_port()
    config = tmp_path / "controller.toml"
    config.write_text(
        f'{CHEAP}[http]\nport = {port}\n[site]\ndir = "{fleet.site.dir}"\n'
        f'[database]\nurl = "{database_url}"\n'
        f"[mqtt]\nport = {fleet.broker.port}\n"
        f"[alerts]\noffline_after_min = {OFFLINE_AFTER_MIN}\ncheck_every_s = 0.5\n"
        f'webhook_url = "{webhook.url}"\n',
        encoding="utf-8",
    )
    cli = [sys.executable, "-m", "cli.main"]
    added = subprocess.run(
        [*cli, "user", "add", "ky-thuat", "--role", "technician", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    password = re.search(r"Password: (\S+)", added.stdout)
    assert password
    log = (tmp_path / "controller.log").open("wb")
    server = subprocess.Popen(
        [*cli, "controller", "--config", str(config)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.poll() is None, (tmp_path / "controller.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(up, "the controller answers")
        with httpx.Client(base_url=url, timeout=10) as client:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
            assert csrf
            client.post(
                "/login",
                data={"username": "ky-thuat", "password": password.group(1),
                      "csrf_token": csrf.group(1)},
            )  # fmt: skip
            assert client.get("/api/me").json()["role"] == "technician"
            yield client
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def open_alert(client: httpx.Client, device: str, kind: str) -> dict[str, Any] | None:
    alerts = client.get("/api/alerts", params={"status": "open", "device": device}).json()
    return next((a for a in alerts if a["kind"] == kind), None)


def test_offline_alert_fires_and_clears_and_paper_out_alerts(
    fleet: Fleet, controller: httpx.Client, virtual_printer: VirtualPrinter, webhook: Receiver
) -> None:
    client = controller
    speaker = fleet.spawn("loa-1")
    kiosk = {
        "printer_url": virtual_printer.path,
        "status_poll_s": 0.2,
        "voice": "off",
        "web_host": "127.0.0.1",
        "web_port": free_port(),
        **open_now(),
    }
    fleet.spawn("kiosk-1", sections={"kiosk": kiosk})

    def state(device: str) -> str:
        return str(client.get(f"/api/devices/{device}").json()["state"])

    eventually(lambda: state("loa-1") == "online", "loa-1 online on the dashboard API")
    assert client.get("/api/devices", params={"state": "online"}).json()["total"] >= 1
    assert open_alert(client, "loa-1", "device.offline") is None

    speaker.kill9()  # the broker publishes its Will: offline
    eventually(lambda: state("loa-1") == "offline", "loa-1 offline")
    raised = eventually(lambda: open_alert(client, "loa-1", "device.offline"), "the offline alert")
    assert raised["severity"] == "critical"
    assert raised["message_vi"].startswith("Thiết bị loa-1 mất kết nối")
    assert raised["message_en"].startswith("Device loa-1 offline")
    page = client.get("/alerts", headers={"accept": "text/html"}).text
    assert raised["message_vi"] in page and raised["message_en"] in page
    dashboard = client.get("/", params={"state": "alerting"}).text
    assert 'id="device-loa-1"' in dashboard and "Mất kết nối" in dashboard

    acked = client.post(f"/api/alerts/{raised['id']}/acknowledge")
    assert acked.status_code == 403  # a session needs its CSRF token
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert token
    acked = client.post(
        f"/api/alerts/{raised['id']}/acknowledge", headers={"X-CSRF-Token": token.group(1)}
    )
    assert acked.status_code == 200 and acked.json()["acknowledged"]["by"] == "ky-thuat"

    fleet.spawn("loa-1")  # the agent comes back
    eventually(lambda: open_alert(client, "loa-1", "device.offline") is None, "the clear")
    cleared = client.get("/api/alerts", params={"status": "cleared", "device": "loa-1"}).json()
    assert [a["id"] for a in cleared] == [raised["id"]] and cleared[0]["cleared_ms"]
    assert state("loa-1") == "online"
    loa_1 = [("raised", "device.offline", "loa-1"), ("cleared", "device.offline", "loa-1")]
    eventually(
        lambda: [p.what for p in webhook.accepted() if p.what[2] == "loa-1"] == loa_1,
        "the webhook of the raise, then of the clear",
    )

    eventually(
        lambda: client.get("/api/devices/kiosk-1").json()["printer_paper"] == "ok",
        "the kiosk's printer status",
    )
    virtual_printer.paper = "out"
    paper = eventually(
        lambda: open_alert(client, "kiosk-1", "printer.paper_out"), "the paper-out alert"
    )
    assert paper["message_vi"].startswith("Máy in kiosk-1 hết giấy: thay cuộn giấy")
    assert client.get("/api/devices/kiosk-1").json()["alerts"] == ["printer.paper_out"]
    virtual_printer.paper = "ok"
    eventually(lambda: open_alert(client, "kiosk-1", "printer.paper_out") is None, "paper back")

    virtual_printer.answer = "silent"  # a printer that stops answering is offline, not "Đủ giấy"
    silent = eventually(
        lambda: open_alert(client, "kiosk-1", "printer.offline"), "the printer-offline alert"
    )
    assert silent["message_vi"].startswith("Máy in kiosk-1 không trả lời: kiểm tra dây cáp")
    assert client.get("/api/devices/kiosk-1").json()["printer_paper"] == "unknown"
    dashboard = client.get("/").text
    assert "Máy in không trả lời" in dashboard
    virtual_printer.answer = "status"
    eventually(lambda: open_alert(client, "kiosk-1", "printer.offline") is None, "printer back")


def test_key_rotation_checks_real_agents_before_activating(
    fleet: Fleet, controller: httpx.Client
) -> None:
    """An agent running the old configuration refuses the staged key; redeployed, it trusts it."""
    client = controller
    page = client.get("/keys", headers={"accept": "text/html"}).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert token
    csrf = {"X-CSRF-Token": token.group(1)}
    old = fleet.spawn("loa-1")  # its configuration trusts the current key only
    eventually(lambda: client.get("/api/devices/loa-1").json()["state"] == "online", "loa-1 online")
    staged = client.post("/api/keys/stage", headers=csrf).json()["staged"]

    def answer() -> str | None:
        client.post("/api/keys/check", headers=csrf).raise_for_status()
        answers: dict[str, str] = client.get("/api/keys").json()["answers"]
        return answers.get("loa-1")

    assert eventually(answer, "loa-1 answers the check") == "unknown_kid"
    old.stop()
    fleet.spawn("loa-1")  # the configuration deployed again: it now lists the staged key
    eventually(lambda: answer() == "ok", "loa-1 trusts the staged key")
    done = client.post("/api/keys/activate", headers=csrf, json={"kid": staged}).json()
    assert done["active"] == staged and done["staged"] is None
