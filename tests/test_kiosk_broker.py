"""The kiosk agent as systemd runs it, on the real broker: paper out, the page, the reprint."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from cli.brokers.mosquitto import free_port
from kiosk.virtual_printer import VirtualPrinter
from tests.conftest import Fleet
from tests.fleet import Probe, Received
from tests.kiosk_helpers import OFFICERS, counter_headers

EVENTS = "xaso/dev/kiosk-1/event"
HO_TICH = {"code": "ho-tich", "name_vi": "Hộ tịch", "name_en": "Civil status", "prefix": "A"}


def open_now() -> dict[str, Any]:
    """[kiosk] keys for one service open all day, in the fixed-offset zone where it is
    about noon now: a run at any hour stays clear of the office's midnight, where the
    numbers restart (an agent process reads the wall clock)."""
    now = datetime.now(UTC)
    offset = round(12 - now.hour - now.minute / 60)  # -12..12: every one an Etc/GMT zone
    return {
        "tz": f"Etc/GMT{-offset:+d}",  # POSIX signs: Etc/GMT-7 is UTC+7
        "services": [HO_TICH | {"hours": [["00:00", "24:00"]], "weekdays": list(range(7))}],
    }


def http(
    url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_http(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            http(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def printer_event(paper: str) -> Any:
    def match(m: Received) -> bool:
        if m.topic != EVENTS:
            return False
        event = m.json()
        return bool(event["type"] == "printer.status" and event["body"]["paper"] == paper)

    return match


def test_paper_out_on_the_broker_the_page_and_the_reprint(
    fleet: Fleet, probe: Probe, virtual_printer: VirtualPrinter
) -> None:
    port = free_port()
    kiosk = {
        "printer_url": virtual_printer.path,
        "status_poll_s": 0.2,
        "voice": "off",
        "web_host": "127.0.0.1",
        "web_port": port,
        "officers": OFFICERS,
        **open_now(),
    }
    fleet.spawn("kiosk-1", sections={"kiosk": kiosk})
    base = f"http://127.0.0.1:{port}"
    probe.wait_for(printer_event("ok"))
    wait_http(f"{base}/api/state")

    virtual_printer.paper = "out"
    out = probe.wait_for(printer_event("out")).json()["body"]
    assert out["online"] is False and out["pending"] == []
    status, body = http(f"{base}/api/tickets", {"service": "ho-tich"})
    assert status == 201
    number = json.loads(body)["number"]
    assert json.loads(body)["printing"] is False
    issued = probe.wait_for(
        lambda m: m.topic == EVENTS and m.json()["type"] == "ticket.issued"
    ).json()
    assert issued["body"]["number"] == number
    _, page = http(f"{base}/kiosk")
    assert "Hết giấy / Out of paper" in page and number in page
    assert virtual_printer.tickets == []

    virtual_printer.paper = "ok"
    (ticket,) = virtual_printer.wait_tickets(1)
    assert number.encode() in b"".join(getattr(it, "data", b"") for it in ticket.items)
    probe.wait_until(lambda msgs: sum(1 for m in msgs if printer_event("ok")(m)) >= 2, timeout=20)
    _, page = http(f"{base}/kiosk")
    assert "Hết giấy" not in page.split("<main>")[1].split("<script>")[0]

    # a counter's call is a record too
    status, _ = http(f"{base}/api/counters/1/next", {}, counter_headers(base, 1))
    assert status == 200
    called = probe.wait_for(
        lambda m: m.topic == EVENTS and m.json()["type"] == "ticket.called"
    ).json()
    assert called["body"] | {"number": number, "counter": 1} == called["body"]


def test_the_kiosk_works_with_no_network(fleet: Fleet, virtual_printer: VirtualPrinter) -> None:
    port = free_port()
    kiosk = {
        "printer_url": virtual_printer.path,
        "status_poll_s": 0.2,
        "voice": "off",
        "web_host": "127.0.0.1",
        "web_port": port,
        "officers": OFFICERS,
        **open_now(),
    }
    fleet.spawn("kiosk-1", sections={"kiosk": kiosk}, port=free_port())  # no broker there
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/state")
    status, body = http(f"{base}/api/tickets", {"service": "ho-tich"})
    assert status == 201
    (ticket,) = virtual_printer.wait_tickets(1)
    number = json.loads(body)["number"]
    assert number.encode() in b"".join(getattr(it, "data", b"") for it in ticket.items)
    # the records wait in the durable outbox for the network
    db = sqlite3.connect(fleet.tmp / "state" / "kiosk-1" / "agent.sqlite3")
    try:
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox")]
    finally:
        db.close()
    assert {"printer.status", "ticket.issued"} <= {p["type"] for p in payloads}


def test_a_booking_list_from_the_controller_reaches_the_kiosk_agent_and_its_code_redeems(
    fleet: Fleet, probe: Probe, virtual_printer: VirtualPrinter
) -> None:
    """The signed retained bookings.set on the kiosk's own topic: verified, kept, used."""
    port = free_port()
    kiosk = {
        "printer_url": virtual_printer.path,
        "voice": "off",
        "web_host": "127.0.0.1",
        "web_port": port,
        **open_now(),
    }
    fleet.spawn("kiosk-1", sections={"kiosk": kiosk})
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/state")
    now_ms = time.time_ns() // 1_000_000
    topic = "xaso/dev/kiosk-1/bookings"
    body = {
        "version": now_ms,
        "bookings": [{"code": "K7M2QX", "service": "ho-tich", "slot_ms": now_ms, "slot_min": 15}],
    }
    payload = fleet.seal("bookings.set", body, to=topic, cmd_id="bookings-1")
    probe.client.publish(topic, payload, qos=1, retain=True)
    ack = probe.wait_for(
        lambda m: m.topic == "xaso/dev/kiosk-1/ack" and m.json().get("cmd") == "bookings-1"
    ).json()
    assert ack["ok"] is True, ack
    status, answer = http(f"{base}/api/bookings/redeem", {"code": "k7m2qx"})
    assert status == 201, answer
    assert json.loads(answer)["booked"] is True
    status, again = http(f"{base}/api/bookings/redeem", {"code": "K7M2QX"})
    assert status == 409 and "đã được dùng" in json.loads(again)["vi"]
