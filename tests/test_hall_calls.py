"""A hall speaker on another device: the kiosk's calls reach it over MQTT, and nothing else.

Real parts: Mosquitto with the generated ACL, the kiosk and the speaker as
agent processes, espeak-ng and ffmpeg for the call, the speaker's WAV sink.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.brokers.mosquitto import Mosquitto, free_port
from controller.site.devices import add_device
from controller.site.directory import Site
from edge.config import load_config
from kiosk.virtual_printer import VirtualPrinter
from tests.audio_helpers import dominant_hz, read_samples
from tests.conftest import Fleet
from tests.fleet import Probe, Received
from tests.kiosk_helpers import OFFICERS, counter_headers
from tests.mqtt_helpers import Clients, Collector, publish
from tests.test_kiosk_broker import http, open_now, wait_http

HALL = "loa-hall"
CALLS = "xaso/dev/kiosk-1/calls"


@pytest.fixture
def hall(fleet: Fleet, site: Site, broker: Mosquitto) -> Fleet:
    """The fleet plus a speaker provisioned as kiosk-1's hall speaker, as an operator does."""
    add_device(
        site.dir,
        HALL,
        ["speaker"],
        broker_host="127.0.0.1",
        broker_port=broker.port,
        calls_from=["kiosk-1"],
    )
    broker.reload()
    return fleet


@pytest.fixture
def clients(broker: Mosquitto) -> Iterator[Clients]:
    made = Clients(broker.host, broker.port)
    yield made
    made.close_all()


def connect_as(clients: Clients, site: Site, device: str) -> Any:
    config = load_config(site.device_config_path(device))
    return clients.connect(config.username, config.password())


def spawn_hall(fleet: Fleet, **speaker: Any) -> Path:
    played = fleet.tmp / "hall-played"
    fleet.spawn(HALL, sections={"speaker": {"sink": "wav", "wav_dir": str(played), **speaker}})
    return played


def remote_kiosk(printer: VirtualPrinter, web_port: int) -> dict[str, Any]:
    return {
        "printer_url": printer.path,
        "status_poll_s": 0.2,
        "voice": "remote",
        "web_host": "127.0.0.1",
        "web_port": web_port,
        "officers": OFFICERS,
        **open_now(),
    }


def hall_event(kind: str, label: str) -> Any:
    def match(m: Received) -> bool:
        if m.topic != f"xaso/dev/{HALL}/event":
            return False
        event = m.json()
        return bool(event["type"] == kind and event["body"].get("label") == label)

    return match


def hall_counts(probe: Probe, expected: dict[str, int]) -> None:
    """Wait for the hall speaker's telemetry to report exactly these counts."""
    topic = f"xaso/dev/{HALL}/telemetry"
    probe.wait_for(
        lambda m: m.topic == topic and m.json().get("hall_calls") == expected, timeout=60
    )


def call_event(number: str, counter: int, ts: int, event_id: str | None = None) -> bytes:
    body = {
        "ticket_id": uuid.uuid4().hex,
        "number": number,
        "service": "ho-tich",
        "queue": "ho-tich",
        "day": "2026-11-23",
        "priority": False,
        "counter": counter,
        "recall": 0,
        "waited_ms": 60_000,
    }
    event = {"id": event_id or uuid.uuid4().hex, "type": "ticket.called", "ts": ts, "body": body}
    return json.dumps(event).encode()


def test_a_counter_call_is_said_by_the_hall_speaker(
    hall: Fleet, probe: Probe, virtual_printer: VirtualPrinter
) -> None:
    port = free_port()
    played = spawn_hall(hall)
    hall.spawn("kiosk-1", sections={"kiosk": remote_kiosk(virtual_printer, port)})
    probe.status_is(HALL, "online")
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/state")

    status, body = http(f"{base}/api/tickets", {"service": "ho-tich"})
    assert status == 201 and json.loads(body)["number"] == "A001"
    status, _ = http(f"{base}/api/counters/2/next", {}, counter_headers(base, 2))
    assert status == 200

    finished = probe.wait_for(hall_event("play.finished", "A001 → quầy 2"), timeout=90).json()
    assert finished["body"]["origin"] == "call" and finished["body"]["outcome"] == "completed"
    (record,) = [json.loads(line) for line in (played / "played.jsonl").read_text().splitlines()]
    assert record["label"] == "A001 → quầy 2" and record["samples"] > 48000 * 2
    rate, samples = read_samples(played / record["file"], 48000)
    assert dominant_hz(samples[: rate // 4], rate) == pytest.approx(660, abs=10)  # the chime
    assert dominant_hz(samples[rate // 4 : rate // 2], rate) == pytest.approx(880, abs=10)
    # the kiosk itself has no voice: it made no call clip and played nothing
    assert not (hall.tmp / "state" / "kiosk-1" / "call-clips").exists()
    kiosk_events = [m.json()["type"] for m in probe.on("xaso/dev/kiosk-1/event")]
    assert "ticket.called" in kiosk_events and not any(t.startswith("play.") for t in kiosk_events)
    hall_counts(probe, {"queued": 1})


def test_the_hall_speaker_reads_the_kiosks_calls_and_nothing_else(
    hall: Fleet, clients: Clients
) -> None:
    site = hall.site
    speaker = Collector(connect_as(clients, site, HALL), "xaso/dev/kiosk-1/#")
    kiosk = connect_as(clients, site, "kiosk-1")
    controller = clients.connect(*site.controller_credentials())
    # forbidden first, then an allowed marker on the same connection: once the marker is
    # in, the forbidden ones would be too (QoS 1, in order)
    for leaf in ("event", "status", "telemetry", "ack"):
        publish(kiosk, f"xaso/dev/kiosk-1/{leaf}", b"secret-" + leaf.encode())
    publish(kiosk, CALLS, b"marker-kiosk")
    for leaf in ("cmd", "config", "schedule"):
        publish(controller, f"xaso/dev/kiosk-1/{leaf}", b"secret-" + leaf.encode())
    publish(controller, CALLS, b"marker-controller")
    speaker.wait_topic(CALLS, b"marker-kiosk")
    speaker.wait_topic(CALLS, b"marker-controller")
    assert [m.topic for m in speaker.messages] == [CALLS, CALLS]
    # another speaker, not provisioned for the kiosk, reads not even its calls
    other = Collector(connect_as(clients, site, "loa-1"), [CALLS, "xaso/dev/loa-1/cmd"])
    publish(controller, CALLS, b"call")
    publish(controller, "xaso/dev/loa-1/cmd", b"marker")
    other.wait_topic("xaso/dev/loa-1/cmd", b"marker")
    assert other.on(CALLS) == []


def test_stale_duplicate_and_bad_calls_are_not_said_and_stale_ones_are_reported(
    hall: Fleet, probe: Probe, clients: Clients
) -> None:
    played = spawn_hall(hall)
    probe.status_is(HALL, "online")
    hall_counts(probe, {})  # its telemetry is out: the agent listens
    kiosk = connect_as(clients, hall.site, "kiosk-1")
    now = time.time_ns() // 1_000_000
    publish(kiosk, CALLS, call_event("A007", 1, now - 300_000))  # five minutes late
    publish(kiosk, CALLS, call_event("A009", 1, now + 300_000))  # a clock five minutes ahead
    publish(kiosk, CALLS, b"not json")
    publish(kiosk, CALLS, call_event("A01", 100, now))  # no such counter
    rated = {"id": uuid.uuid4().hex, "type": "ticket.rated", "ts": now, "body": {}}
    publish(kiosk, CALLS, json.dumps(rated).encode())
    fresh = call_event("A008", 2, now, event_id="once")
    publish(kiosk, CALLS, fresh)
    publish(kiosk, CALLS, fresh)  # redelivered

    probe.wait_for(hall_event("play.finished", "A008 → quầy 2"), timeout=90)
    hall_counts(probe, {"stale": 1, "clock": 1, "bad": 3, "queued": 1, "duplicate": 1})
    for label, reason in (("A007 → quầy 1", "expired"), ("A009 → quầy 1", "clock")):
        missed = probe.wait_for(hall_event("play.missed", label)).json()["body"]
        assert (missed["origin"], missed["reason"]) == ("call", reason)
    labels = [json.loads(x)["label"] for x in (played / "played.jsonl").read_text().splitlines()]
    assert labels == ["A008 → quầy 2"]


def test_a_call_delivered_too_late_by_the_outbox_is_reported_not_said(
    hall: Fleet, probe: Probe, virtual_printer: VirtualPrinter
) -> None:
    played = spawn_hall(hall, call_max_age_s=1)
    probe.status_is(HALL, "online")
    port = free_port()
    cut_off = hall.spawn(
        "kiosk-1", sections={"kiosk": remote_kiosk(virtual_printer, port)}, port=free_port()
    )  # no broker there: a network drop
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/state")
    assert http(f"{base}/api/tickets", {"service": "ho-tich"})[0] == 201
    assert http(f"{base}/api/counters/1/next", {}, counter_headers(base, 1))[0] == 200
    db = sqlite3.connect(hall.tmp / "state" / "kiosk-1" / "agent.sqlite3")
    try:
        (payload,) = db.execute("SELECT payload FROM outbox WHERE topic = ?", (CALLS,)).fetchone()
    finally:
        db.close()
    called_ms = json.loads(payload)["ts"]
    assert cut_off.terminate() == 0
    while time.time_ns() // 1_000_000 <= called_ms + 1000:  # the call grows older than 1 s
        time.sleep(0.1)

    port = free_port()
    hall.spawn("kiosk-1", sections={"kiosk": remote_kiosk(virtual_printer, port)})
    probe.wait_for(
        lambda m: m.topic == "xaso/dev/kiosk-1/event" and m.json()["type"] == "ticket.called"
    )  # the record still reaches the controller
    hall_counts(probe, {"stale": 1})
    missed = probe.wait_for(hall_event("play.missed", "A001 → quầy 1")).json()["body"]
    assert (missed["origin"], missed["reason"], missed["planned_ms"]) == (
        "call",
        "expired",
        called_ms,
    )
    assert not (played / "played.jsonl").exists()


@pytest.mark.parametrize(
    ("device", "speaker", "expected"),
    [
        (
            {"id": "kiosk-2", "roles": ["kiosk"]},
            {"calls_from": ["kiosk-1"]},
            "[speaker] calls_from needs the speaker role: add 'speaker' to [device] roles",
        ),
        (
            {"id": "kiosk-1", "roles": ["kiosk", "speaker"]},
            {"calls_from": ["kiosk-1"]},
            "[speaker] calls_from lists this device ('kiosk-1')",
        ),
        (
            {"id": "loa-hall"},
            {"calls_from": ["kiosk-1", "kiosk-1"]},
            "[speaker] calls_from: list each kiosk once; repeated: kiosk-1",
        ),
        ({"id": "loa-hall"}, {"calls_from": ["Kiosk 1"]}, "[speaker] calls_from[0]: "),
        ({"id": "loa-hall"}, {"call_max_age_s": 0}, "[speaker] call_max_age_s: "),
    ],
)
def test_calls_from_faults_name_the_key_and_the_fix(
    tmp_path: Path, device: dict[str, Any], speaker: dict[str, Any], expected: str
) -> None:
    from edge.config import ConfigError, parse_config
    from protocol.signing import SigningKey

    key = SigningKey.generate()
    data = {"device": device, "trust": {"keys": {key.kid: key.public.b64}}, "speaker": speaker}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path / "agent.toml")
    assert expected in str(caught.value)
