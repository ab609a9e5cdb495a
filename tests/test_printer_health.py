"""The kiosk's printer unplugged, silent, garbled, stuck: never "paper ok", back without a restart.

The printer is a VirtualPrinter on a real pseudo-terminal. Unplugging closes
its side of the pty, so the kiosk's tty fails as a pulled USB cable does
(EIO, termios errors) and the device node goes away; plugging back is a new
pty, reached by the same name (a /dev/serial/by-id style link) or under a
new one (``ttyUSB1`` where ``ttyUSB0`` was, found by a glob). At each step
the kiosk's view (what the page shows), its ``printer.status`` events and
the controller's alert rules on the latest event must agree with the truth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.fleet.alert_rules import (
    COVER_OPEN,
    PAPER_LOW,
    PAPER_OUT,
    PRINTER_OFFLINE,
    UNPRINTABLE,
    DeviceSnapshot,
    Thresholds,
    active_alerts,
)
from kiosk.escpos_read import Text
from kiosk.printer import PrinterStatus
from kiosk.printing import PrintWorker
from kiosk.service import Kiosk
from kiosk.ticket_store import Ticket
from kiosk.virtual_printer import PrintedTicket, VirtualPrinter
from tests.test_kiosk_role import Events, until

NOW = 1_763_800_000_000


@pytest.fixture
def printers() -> Iterator[list[VirtualPrinter]]:
    made: list[VirtualPrinter] = []
    yield made
    for printer in made:
        printer.close()


def plug(dev: Path, name: str, printers: list[VirtualPrinter]) -> VirtualPrinter:
    """A printer plugged in: a new pty, and udev's link to it under ``name``."""
    printer = VirtualPrinter().start()
    printers.append(printer)
    link = dev / name
    link.unlink(missing_ok=True)
    link.symlink_to(printer.path)
    return printer


def unplug(dev: Path, name: str, printer: VirtualPrinter) -> None:
    printer.unplug()
    (dev / name).unlink()


def numbers(ticket: PrintedTicket) -> list[bytes]:
    """The ticket numbers printed on it ("A001"): a letter and digits."""
    return [
        it.data
        for it in ticket.items
        if isinstance(it, Text) and it.data[:1].isupper() and it.data[1:].isdigit()
    ]


def last_status(events: Events) -> dict[str, Any]:
    return [b for t, b in events if t == "printer.status"][-1]


def alerts_for(body: dict[str, Any]) -> set[str]:
    """What the controller raises for this printer.status body (its rules, pure)."""
    device = DeviceSnapshot("kiosk-1", "online", NOW, NOW, printer=body)
    return {kind for kind, _ in active_alerts([device], [], Thresholds(), NOW)}


def assert_truth(kiosk: Kiosk, events: Events, state: str, alerts: set[str]) -> None:
    """The page's view, the last event and the controller's alerts all say ``state``."""

    def agree() -> bool:  # the page and the last event, once both have caught up
        if not any(t == "printer.status" for t, _ in events):
            return False
        view, body = kiosk.printer_view(), last_status(events)
        return view["state"] == body["state"] == state and view["pending"] == body["pending"]

    until(agree, 60)  # a reprint between reading one and the other is not a disagreement
    view, body = kiosk.printer_view(), last_status(events)
    assert view["can_print"] is (state in ("ready", "near_end"))
    if state == "offline":  # never "paper ok" from a printer that does not answer
        assert (view["paper"], body["paper"], body["cover"]) == ("unknown", "unknown", "unknown")
    assert alerts_for(body) == alerts
    assert kiosk.alive()  # nothing for the watchdog to restart: the kiosk recovers alone


@pytest.mark.parametrize(
    "names", [("printer", "printer"), ("ttyUSB0", "ttyUSB1")], ids=["same-name", "new-name"]
)
def test_unplugged_while_idle_then_plugged_back_prints_again(
    make_kiosk: Callable[..., Kiosk],
    tmp_path: Path,
    printers: list[VirtualPrinter],
    names: tuple[str, str],
) -> None:
    first_name, second_name = names
    dev = tmp_path / "dev"
    dev.mkdir()
    url = str(dev / first_name) if first_name == second_name else str(dev / "ttyUSB*")
    first = plug(dev, first_name, printers)
    events: Events = []
    kiosk = make_kiosk(events, printer_url=url)
    assert_truth(kiosk, events, "ready", set())
    kiosk.issue("ho-tich")
    assert numbers(first.wait_tickets(1)[0]) == [b"A001"]
    until(lambda: kiosk.printer_view()["pending"] == [])  # confirmed by the status after it

    unplug(dev, first_name, first)  # idle: nothing was being printed
    assert_truth(kiosk, events, "offline", {PRINTER_OFFLINE})
    assert last_status(events)["fault"] == "unplugged"
    kept = kiosk.issue("ho-tich")
    assert kept["number"] == "A002" and kept["printing"] is False  # not "your ticket is printing"
    assert kiosk.printer_view()["pending"] == ["A002"]  # on the page: "đã giữ số: A002"

    second = plug(dev, second_name, printers)  # no restart of anything
    (reprinted,) = second.wait_tickets(1)
    assert numbers(reprinted) == [b"A002"]
    assert_truth(kiosk, events, "ready", set())
    until(lambda: kiosk.printer_view()["pending"] == [])
    kiosk.issue("ho-tich")
    assert numbers(second.wait_tickets(2)[1]) == [b"A003"]
    told = [(b["state"], b["pending"]) for t, b in events if t == "printer.status"]
    assert [state for state, _ in told] in (["ready", "offline", "ready"],
                                            ["ready", "offline", "ready", "ready"])  # fmt: skip
    assert told[-1] == ("ready", [])  # A002 printed: the controller no longer shows it owed


@pytest.mark.parametrize("answer", ["silent", "garbage"])
def test_a_printer_that_never_answers_is_never_ok(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter, answer: str
) -> None:
    virtual_printer.answer = answer  # type: ignore[assignment]
    events: Events = []
    kiosk = make_kiosk(events, printer_url=virtual_printer.path, printer_baud=115200)
    fault = "silent" if answer == "silent" else "garbled"
    until(lambda: kiosk.printer.status is not None)
    issued = kiosk.issue("dat-dai")
    assert issued["printing"] is False
    asked = virtual_printer.status_requests
    until(lambda: virtual_printer.status_requests >= asked + 3)  # polls go on, each one failing
    statuses = [b for t, b in events if t == "printer.status"]
    assert statuses and all(
        (b["state"], b["paper"], b["fault"]) == ("offline", "unknown", fault) for b in statuses
    )
    assert alerts_for(statuses[-1]) == {PRINTER_OFFLINE}
    assert kiosk.printer_view()["pending"] == ["B001"] and virtual_printer.tickets == []

    virtual_printer.answer = "status"  # the right cable, the right baud: it prints
    assert numbers(virtual_printer.wait_tickets(1)[0]) == [b"B001"]
    until(lambda: last_status(events)["state"] == "ready")


def test_cover_open_paper_low_and_paper_out_are_told_apart(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter
) -> None:
    events: Events = []
    kiosk = make_kiosk(events)
    assert_truth(kiosk, events, "ready", set())
    virtual_printer.cover_open = True  # its paper sensor reads "out" too
    assert_truth(kiosk, events, "cover_open", {COVER_OPEN})
    virtual_printer.cover_open = False
    virtual_printer.paper = "out"
    assert_truth(kiosk, events, "paper_out", {PAPER_OUT})
    virtual_printer.paper = "near_end"
    assert_truth(kiosk, events, "near_end", {PAPER_LOW})
    kiosk.issue("ho-tich")  # near the end still prints
    assert numbers(virtual_printer.wait_tickets(1)[0]) == [b"A001"]


def test_an_unrenderable_ticket_is_reported_and_does_not_block_the_rest(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter
) -> None:
    events: Events = []
    kiosk = make_kiosk(events)
    until(lambda: kiosk.printer_view()["state"] == "ready")
    virtual_printer.paper = "out"
    until(lambda: kiosk.printer_view()["state"] == "paper_out")
    render = kiosk.printer._render
    bad = kiosk.issue("ho-tich")["ticket_id"]

    def render_or_fail(ticket: Ticket) -> bytes:
        if ticket.id == bad:  # as a name the font cannot draw would
            raise ValueError("word too wide for 576 dots")
        return render(ticket)

    kiosk.printer._render = render_or_fail
    kiosk.issue("ho-tich")
    kiosk.issue("dat-dai")
    virtual_printer.paper = "ok"
    printed = virtual_printer.wait_tickets(2)
    assert sorted(numbers(t) for t in printed) == [[b"A002"], [b"B001"]]
    until(lambda: "A001" in last_status(events).get("unprintable", []))
    body = last_status(events)
    assert body["unprintable"] == ["A001"] and body["state"] == "ready"
    assert alerts_for(body) == {UNPRINTABLE}
    until(lambda: kiosk.printer_view()["pending"] == [])
    assert kiosk.printer_view()["unprintable"] == ["A001"]
    # the citizen says their number at the counter: it is called, and nothing is owed
    kiosk.counter(1, "call", officer="lan", number="A001")
    assert kiosk.printer_view()["unprintable"] == []
    body = last_status(events)
    assert "unprintable" not in body and alerts_for(body) == set()


class BlockingPrinter:
    """A line whose write never returns (a driver stuck in the kernel): the lowest layer."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def send(self, data: bytes) -> None:
        self.release.wait()

    def status(self) -> PrinterStatus:
        return PrinterStatus(online=True, paper="ok", cover="closed")

    def close(self) -> None:
        self.release.set()


def test_a_stuck_printing_path_makes_the_kiosk_unhealthy(make_kiosk: Callable[..., Kiosk]) -> None:
    stuck = BlockingPrinter()
    kiosk = make_kiosk()
    worker = PrintWorker(lambda: stuck, kiosk.render, kiosk.store, poll_s=0.05, stuck_after_s=1.0)
    worker.start()
    try:
        until(lambda: worker.status is not None)
        assert worker.healthy()
        worker.submit(kiosk.office.issue("ho-tich", kiosk.now_ms()).ticket.id)
        until(lambda: not worker.healthy())  # the thread lives, but its loop no longer turns
        assert worker.alive
    finally:
        stuck.release.set()
        worker.close()


def test_unplugged_printer_path_is_a_clear_log_not_a_crash(
    make_kiosk: Callable[..., Kiosk], tmp_path: Path
) -> None:
    """A glob with nothing plugged in: offline, unplugged, and the number kept."""
    events: Events = []
    kiosk = make_kiosk(events, printer_url=str(tmp_path / "ttyUSB*"))
    assert_truth(kiosk, events, "offline", {PRINTER_OFFLINE})
    assert kiosk.issue("ho-tich")["printing"] is False
    assert kiosk.printer_view()["pending"] == ["A001"]
