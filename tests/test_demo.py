"""`xaso demo` as a newcomer runs it: everything comes up, shows in the controller, and
stops cleanly. The test signs in with the admin account the banner prints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cli.brokers.mosquitto import free_port
from tests.fleet import ROOT
from tests.test_controller_e2e import sign_in
from tests.timing import on_time

SETTLE_S = 90  # how long a condition may take to come true before the test fails
BULLETIN = "Bản tin thử nghiệm"


def start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """The demo in its own session, so that a signal to its group is a terminal's Ctrl-C."""
    log = tmp_path / "demo.out"
    argv = [sys.executable, "-m", "cli.main", "demo", "--dir", str(tmp_path / "d"), *args]
    with log.open("wb") as out:
        demo = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return demo, log


def until(what: str, check: Callable[[], Any], demo: subprocess.Popen[bytes], log: Path) -> Any:
    """Poll `check` while the demo runs, until it returns something truthy."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        found = check()
        if found:
            return found
        assert demo.poll() is None, f"the demo exited before: {what}\n{log.read_text()}"
        assert time.monotonic() < deadline, f"not within {SETTLE_S} s: {what}\n{log.read_text()}"
        time.sleep(0.5)


def admin_session(demo: subprocess.Popen[bytes], log: Path) -> httpx.Client:
    """Signed in to the controller with the admin account from the banner."""
    banner = until("the banner", lambda: "Ctrl-C stops everything" in log.read_text(), demo, log)
    assert banner
    text = log.read_text()
    url = re.search(r"dashboard\s+(http://127\.0\.0\.1:\d+)/", text)
    password = re.search(r"^\s+admin\s+(\S+)\s+admin\s", text, re.MULTILINE)
    assert url and password, text
    return sign_in(url.group(1), "admin", password.group(1))


def states(web: httpx.Client) -> dict[str, str]:
    answer = web.get("/api/devices")
    assert answer.status_code == 200, answer.text
    return {d["id"]: d["state"] for d in answer.json()["devices"]}


def plays(web: httpx.Client, since_ms: int) -> dict[str, dict[str, Any]]:
    period: dict[str, str | int] = {"start_ms": since_ms, "end_ms": since_ms + 3_600_000}
    answer = web.get("/api/reports/plays", params={**period, "by": "device"})
    assert answer.status_code == 200, answer.text
    return {row["key"]: row for row in answer.json()}


def test_demo_runs_a_fleet_the_controller_shows_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    mqtt_port, http_port = free_port(), free_port()
    since_ms = time.time_ns() // 1_000_000
    demo, log = start_demo(tmp_path, "--mqtt-port", str(mqtt_port), "--http-port", str(http_port))
    speakers = ("loa-thon-1", "loa-thon-2")
    try:
        web = admin_session(demo, log)
        everyone = {"kiosk-mot-cua-1": "online", "loa-thon-1": "online", "loa-thon-2": "online"}
        until("three devices online in /api/devices", lambda: states(web) == everyone, demo, log)
        page = web.get("/").text
        assert '<html lang="vi">' in page and "Trực tuyến" in page and "loa-thon-1" in page
        page = web.get("/?lang=en").text
        assert '<html lang="en">' in page and "Online" in page
        kiosk_url = re.search(r"kiosk (http://127\.0\.0\.1:\d+)/kiosk", log.read_text())
        assert kiosk_url is not None, log.read_text()
        assert "Mời chọn dịch vụ" in httpx.get(kiosk_url.group(1) + "/kiosk").text
        counter = httpx.get(kiosk_url.group(1) + "/counter/1").text  # the sign-in first
        assert "Cán bộ đăng nhập quầy" in counter and "Cán bộ demo" in counter

        # the bulletin is the controller's: in its schedules, and its plays in the report
        (entry,) = web.get("/api/schedules").json()
        assert entry["label"] == BULLETIN and entry["target"] == {"kind": "group", "id": "cum-loa"}
        rows = until(
            "the bulletin's proof of play",
            lambda: (
                all(plays(web, since_ms).get(s, {}).get("completed") for s in speakers)
                and plays(web, since_ms)
            ),
            demo,
            log,
        )
        assert all(rows[s]["missed"] == 0 and rows[s]["failed"] == 0 for s in speakers)
        until("a ticket called", lambda: "ticket.called A001" in log.read_text(), demo, log)
        hall = tmp_path / "d" / "played" / "kiosk-mot-cua-1" / "played.jsonl"
        until(  # the call's record is written when it has played: Ctrl-C must not cut it
            "the call of A001 heard in the hall",
            lambda: hall.exists() and '"A001 → quầy 1"' in hall.read_text("utf-8"),
            demo,
            log,
        )
        until("a ping round", lambda: "ping:" in log.read_text(), demo, log)
        until(
            "the narrated bulletin", lambda: f"{BULLETIN} completed" in log.read_text(), demo, log
        )

        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole group
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    text = log.read_text()
    assert f"mqtt://127.0.0.1:{mqtt_port}" in text and "mosquitto_sub" in text
    assert f"http://127.0.0.1:{http_port}/" in text
    pings = [line for line in text.splitlines() if "ping:" in line]
    assert pings and "no answer" not in pings[-1]
    for device in ("loa-thon-1", "loa-thon-2", "kiosk-mot-cua-1"):
        assert f"{device}: offline" in text  # each said goodbye on the way out
    assert "Traceback" not in text
    assert "Traceback" not in (tmp_path / "d" / "logs" / "controller.log").read_text()
    # the speakers played the spoken bulletin, in step, into their WAV sinks
    starts = []
    for speaker in speakers:
        played = tmp_path / "d" / "played" / speaker / "played.jsonl"
        first = json.loads(played.read_text().splitlines()[0])
        assert first["label"] == BULLETIN and first["samples"] > 48000 * 5
        starts.append(first["started_ms"])
    # in step as far as a busy machine lets a test say (the figure: bench/start_accuracy.py)
    assert on_time(max(starts), min(starts))
    assert f"play.finished {BULLETIN} completed" in text
    # the kiosk printed a ticket as an image and called it into the hall speaker's WAV file
    printed = sorted((tmp_path / "d" / "printed" / "kiosk-mot-cua-1").glob("ticket-*.png"))
    assert printed and printed[0].stat().st_size > 1000
    assert "ticket.issued A001" in text and "ticket.called A001 → quầy 1" in text
    calls = tmp_path / "d" / "played" / "kiosk-mot-cua-1" / "played.jsonl"
    said = [json.loads(line) for line in calls.read_text().splitlines()]
    (call,) = [c for c in said if c["label"] == "A001 → quầy 1"]
    assert call["samples"] > 48000 * 2


def test_demo_without_mosquitto_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    """`--broker embedded` is what `auto` picks on a machine with no mosquitto binary;
    `--duration` ends the demo by itself."""
    demo, log = start_demo(tmp_path, "--broker", "embedded", "--speakers", "1", "--duration", "30")
    try:
        web = admin_session(demo, log)
        both = {"kiosk-mot-cua-1": "online", "loa-thon-1": "online"}
        until("both devices online in /api/devices", lambda: states(web) == both, demo, log)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    text = log.read_text()
    assert "embedded amqtt broker" in text and "Traceback" not in text
    for device in ("loa-thon-1", "kiosk-mot-cua-1"):
        assert f"{device}: offline" in text
