"""`xaso demo` as a newcomer runs it: everything comes up, answers, and stops cleanly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

from controller.mosquitto import free_port
from tests.fleet import ROOT


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_demo_runs_a_fleet_that_answers_and_stops_cleanly(tmp_path):
    mqtt_port, http_port = free_port(), free_port()
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge.cli",
                "demo",
                "--duration",
                "25",
                "--dir",
                str(tmp_path / "d"),
                "--mqtt-port",
                str(mqtt_port),
                "--http-port",
                str(http_port),
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        devices: list[dict] = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                devices = json.loads(fetch(f"http://127.0.0.1:{http_port}/api/devices"))
            except OSError:
                devices = []
            if len(devices) == 3 and all(d["state"] == "online" for d in devices):
                break
            time.sleep(0.5)
        assert sorted(d["id"] for d in devices) == ["kiosk-mot-cua-1", "loa-thon-1", "loa-thon-2"]
        assert all(d["state"] == "online" for d in devices)
        page = fetch(f"http://127.0.0.1:{http_port}/")
        assert "Trực tuyến" in page and "lang='vi'" in page
        assert "Online" in fetch(f"http://127.0.0.1:{http_port}/?lang=en")
        kiosk_url = re.search(r"kiosk (http://127\.0\.0\.1:\d+)/kiosk", log.read_text())
        assert kiosk_url is not None, log.read_text()
        assert "Mời chọn dịch vụ" in fetch(kiosk_url.group(1) + "/kiosk")
        assert "Gọi số tiếp" in fetch(kiosk_url.group(1) + "/counter/1")
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    text = log.read_text()
    assert f"mqtt://127.0.0.1:{mqtt_port}" in text and "mosquitto_sub" in text
    pings = [line for line in text.splitlines() if "ping:" in line]
    assert pings and "no answer" not in pings[-1]
    for device in ("loa-thon-1", "loa-thon-2", "kiosk-mot-cua-1"):
        assert f"{device}: offline" in text  # each said goodbye on the way out
    assert "Traceback" not in text
    # the speakers played the spoken bulletin, in step, into their WAV sinks
    starts = []
    for speaker in ("loa-thon-1", "loa-thon-2"):
        played = tmp_path / "d" / "played" / speaker / "played.jsonl"
        first = json.loads(played.read_text().splitlines()[0])
        assert first["label"] == "Bản tin thử nghiệm" and first["samples"] > 48000 * 5
        starts.append(first["started_ms"])
    assert abs(starts[0] - starts[1]) < 50
    assert "play.finished Bản tin thử nghiệm completed" in text
    # the kiosk printed a ticket as an image and called it into the hall speaker's WAV file
    printed = sorted((tmp_path / "d" / "printed" / "kiosk-mot-cua-1").glob("ticket-*.png"))
    assert printed and printed[0].stat().st_size > 1000
    assert "ticket.issued A001" in text and "ticket.called A001 → quầy 1" in text
    calls = tmp_path / "d" / "played" / "kiosk-mot-cua-1" / "played.jsonl"
    call = json.loads(calls.read_text().splitlines()[0])
    assert call["label"] == "A001 → quầy 1" and call["samples"] > 48000 * 2


def test_demo_without_mosquitto_runs_on_the_embedded_broker(tmp_path):
    """`--broker embedded` is what `auto` picks on a machine with no mosquitto binary."""
    http_port = free_port()
    log = tmp_path / "demo.out"
    argv = [sys.executable, "-m", "edge.cli", "demo", "--broker", "embedded", "--speakers", "1"]
    argv += ["--duration", "15", "--dir", str(tmp_path / "d"), "--http-port", str(http_port)]
    with log.open("wb") as out:
        demo = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        devices: list[dict] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                devices = json.loads(fetch(f"http://127.0.0.1:{http_port}/api/devices"))
            except OSError:
                devices = []
            if len(devices) == 2 and all(d["state"] == "online" for d in devices):
                break
            time.sleep(0.5)
        assert sorted(d["state"] for d in devices) == ["online", "online"], log.read_text()
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    text = log.read_text()
    assert "embedded amqtt broker" in text and "Traceback" not in text
