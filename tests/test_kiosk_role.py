"""The kiosk role: printing on a pty printer, paper out and reprint, buttons, LEDs and calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from broadcast.audio.player import Player
from broadcast.audio.sinks import WavFileSink
from kiosk.buttons import Binding, ButtonPanel
from kiosk.escpos_read import Cut, Text
from kiosk.service import Kiosk
from kiosk.virtual_printer import VirtualPrinter
from tests.player_helpers import ffmpeg_children

Events = list[tuple[str, dict[str, Any]]]


def until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Wait for a condition the kiosk's threads bring about (never a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    factory = MockFactory()  # a fresh factory per test (PITFALLS: MockFactory keeps pin state)
    yield factory
    factory.reset()


def texts(ticket: Any) -> list[bytes]:
    return [it.data for it in ticket.items if isinstance(it, Text)]


def test_an_issued_ticket_is_printed_and_recorded(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter
) -> None:
    events: Events = []
    kiosk = make_kiosk(events)
    issued = kiosk.issue("ho-tich")
    assert issued["number"] == "A001" and issued["service_vi"] == "Hộ tịch"
    (ticket,) = virtual_printer.wait_tickets(1)
    assert b"A001" in texts(ticket) and isinstance(ticket.items[-1], Cut)
    assert ticket.png is not None and ticket.png.stat().st_size > 1000
    until(lambda: kiosk.store.ticket(issued["ticket_id"]).printed)
    statuses = [b for t, b in events if t == "printer.status"]
    assert statuses[0] | {"pending": []} == {
        "online": True,
        "paper": "ok",
        "cover": "closed",
        "pending": [],
        "state": "ready",
    }
    assert [t for t, _ in events].count("ticket.issued") == 1


def test_paper_out_keeps_the_number_and_reprints_it(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter
) -> None:
    events: Events = []
    kiosk = make_kiosk(events)
    until(lambda: kiosk.printer.status is not None)
    virtual_printer.paper = "out"
    until(lambda: any(t == "printer.status" and b["paper"] == "out" for t, b in events))
    kept = kiosk.issue("dat-dai")
    assert kept["number"] == "B001" and kept["printing"] is False
    until(lambda: kiosk.printer_view()["pending"] == ["B001"])
    assert kiosk.snapshot()["printer"]["can_print"] is False
    assert virtual_printer.tickets == []

    virtual_printer.paper = "ok"
    (ticket,) = virtual_printer.wait_tickets(1)
    assert b"B001" in texts(ticket)
    until(lambda: kiosk.printer_view()["pending"] == [])
    back = [b for t, b in events if t == "printer.status"]
    assert [b["paper"] for b in back] == ["ok", "out", "ok", "ok"]
    assert back[1]["online"] is False
    # paper back: told at once with B001 still owed, and again once it is printed
    assert [b["pending"] for b in back[2:]] == [["B001"], []]


def test_a_ticket_issued_before_a_restart_is_printed_at_start(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter
) -> None:
    virtual_printer.paper = "out"
    first = make_kiosk()
    until(lambda: first.printer.status is not None and not first.printer_view()["can_print"])
    first.issue("ho-tich")
    first.close()
    virtual_printer.paper = "ok"
    make_kiosk()  # the same ticket file, as after a power cut
    (ticket,) = virtual_printer.wait_tickets(1)
    assert b"A001" in texts(ticket)


def test_buttons_issue_one_ticket_per_press_and_leds_follow_the_printer(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter, pins: MockFactory
) -> None:
    events: Events = []
    kiosk = make_kiosk(
        events,
        pin_factory=pins,
        buttons=[
            {"service": "ho-tich", "pin": 5, "led_pin": 6},
            {"service": "ho-tich", "pin": 13, "led_pin": 19, "priority": True},
        ],
        bounce_ms=300,
    )
    button, led = pins.pin(5), pins.pin(6)
    until(lambda: led.state == 1)  # ready
    button.drive_low()  # pressed (pull-up: low is pressed)
    button.drive_high()
    button.drive_low()  # contact bounce within bounce_ms: ignored
    button.drive_high()
    (ticket,) = virtual_printer.wait_tickets(1)
    assert b"A001" in texts(ticket)
    pins.pin(13).drive_low()
    pins.pin(13).drive_high()
    virtual_printer.wait_tickets(2)
    until(lambda: not kiosk.store.pending_prints())  # confirmed by the status after it
    issued = [b for t, b in events if t == "ticket.issued"]
    assert [(b["number"], b["priority"]) for b in issued] == [("A001", False), ("A002", True)]

    virtual_printer.paper = "out"
    until(lambda: led.state == 0 and kiosk.panel is not None)
    assert kiosk.panel is not None and kiosk.panel.state == "out_of_paper"
    time.sleep(0.35)  # a new press, not a bounce of the last one
    button.drive_low()
    button.drive_high()
    until(lambda: kiosk.printer_view()["pending"] == ["A003"])
    virtual_printer.paper = "ok"
    until(lambda: led.state == 1)
    assert b"A003" in texts(virtual_printer.wait_tickets(3)[2])


def test_the_led_blinks_while_busy(pins: MockFactory) -> None:
    presses: list[tuple[str, bool]] = []
    panel = ButtonPanel(
        [Binding("ho-tich", 5, 6)], lambda s, p: presses.append((s, p)), pin_factory=pins
    )
    led = pins.pin(6)
    panel.show("ready")
    assert led.state == 1
    panel.show("busy")
    until(lambda: [s.state for s in led.states].count(True) >= 3)  # on, off, on, ...
    panel.show("out_of_paper")
    assert led.state == 0
    pins.pin(5).drive_low()
    assert presses == [("ho-tich", False)]  # a press still issues: the number is kept
    panel.close()


def test_a_call_is_spoken_after_a_chime_into_the_hall_speaker(
    make_kiosk: Callable[..., Kiosk], tmp_path: Path
) -> None:
    events: Events = []
    sink = WavFileSink(tmp_path / "hall")
    player = Player(sink, on_event=lambda body: events.append((body.TYPE, body.wire())))
    try:
        kiosk = make_kiosk(events, player=player)
        kiosk.issue("ho-tich")
        assert kiosk.counter(2, "next")["ticket"]["number"] == "A001"
        until(lambda: any(t == "play.finished" for t, _ in events), timeout_s=60)
        (played,) = sink.played()
        assert played["label"] == "A001 → quầy 2" and played["key"].startswith("call-A001-2-")
        assert played["samples"] > 48000 * 2  # a chime and the sentence, twice
        started = next(b for t, b in events if t == "play.started")
        assert started["origin"] == "call"
    finally:
        player.close()


def test_a_kiosk_speaking_its_own_calls_keeps_no_ffmpeg_waiting(
    make_kiosk: Callable[..., Kiosk], tmp_path: Path
) -> None:
    """Its calls are prepared clips, decoded by mpg123 or opusdec as a speaker's are."""

    events: Events = []
    before = ffmpeg_children()
    kiosk = make_kiosk(events, voice="wav", wav_dir=str(tmp_path / "calls"))
    kiosk.issue("ho-tich")
    assert kiosk.counter(2, "next")["ticket"]["number"] == "A001"
    until(lambda: any(t == "play.finished" for t, _ in events), timeout_s=60)
    finished = next(b for t, b in events if t == "play.finished")
    assert finished["outcome"] == "completed"
    assert ffmpeg_children() == before  # none was started ahead, and none waits after


def test_bad_printer_port_is_offline_not_a_crash(make_kiosk: Callable[..., Kiosk]) -> None:
    events: Events = []
    kiosk = make_kiosk(events, printer_url="/dev/does-not-exist-xaso")
    until(lambda: kiosk.printer.status is not None)
    assert kiosk.printer_view()["online"] is False
    kiosk.issue("ho-tich")
    assert kiosk.printer_view()["pending"] == ["A001"]
    assert events[0] == (
        "printer.status",
        {
            "online": False,
            "paper": "unknown",  # never "ok" from a printer that is not there
            "cover": "unknown",
            "pending": [],
            "state": "offline",
            "fault": "unplugged",
        },
    )


@pytest.mark.parametrize("thread", ["printer", "web", "caller"])
def test_a_dead_kiosk_thread_makes_the_agent_unhealthy(
    tmp_path: Path, virtual_printer: VirtualPrinter, thread: str
) -> None:
    """The systemd watchdog is withheld once any of the kiosk's threads has stopped."""
    from cli.brokers.mosquitto import free_port
    from edge.agent import Agent
    from edge.config import parse_config
    from kiosk.role import attach
    from protocol.signing import SigningKey

    key = SigningKey.generate()
    config = parse_config(
        {
            "device": {"id": "kiosk-1", "roles": ["kiosk"]},
            "mqtt": {"port": free_port()},  # no broker: the kiosk works without one
            "trust": {"keys": {key.kid: key.public.b64}},
            "state": {"dir": str(tmp_path / "state")},
            "kiosk": {
                "printer_url": virtual_printer.path,
                "voice": "wav",
                "web_host": "127.0.0.1",
                "web_port": free_port(),
            },
        },
        tmp_path / "agent.toml",
    )
    agent = Agent(config)
    kiosk = attach(agent, config.kiosk)
    agent.start()
    try:
        assert agent.healthy
        {"printer": kiosk.printer, "web": kiosk.web, "caller": kiosk.caller}[thread].close()
        assert not agent.healthy
    finally:
        agent.close()
