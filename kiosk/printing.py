"""The print worker: one thread owns the serial line, prints tickets and watches the printer.

A ticket is already durable (kiosk.ticket_store) when it is handed here, so
nothing printed can be lost, only delayed:

- The printer's status is polled every ``poll_s`` (DLE EOT); each change is
  reported once through ``on_status`` (the kiosk's ``printer.status`` event).
- A ticket is sent only while the last status says it can print; otherwise it
  stays unprinted in the store, and every unprinted ticket still waiting is
  printed as soon as a poll finds the printer ready again.
- After each ticket the status is read again: a roll that ran out during the
  ticket leaves it unprinted, to be printed again when paper is loaded (a
  citizen may then hold two slips with one number; never none).

- A printer that does not answer is offline (unplugged, silent or garbled),
  never "paper ok"; its port is dropped and opened again at the next poll,
  so a printer plugged back in prints again without a restart.
- A ticket that cannot be rendered is reported (``on_unprintable``) and set
  aside, so it does not hold up the tickets after it.
- ``healthy`` is false when the thread died or stopped going round its loop
  (a call into the line that never returns), for the agent's watchdog.

Polls and prints share the one thread, so a status request never lands in
the middle of a ticket's bytes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

from kiosk.printer import GarbledReply, PrinterError, PrinterStatus, offline
from kiosk.ticket_store import Ticket, TicketError, TicketStore

log = logging.getLogger(__name__)
Activity = Literal["ready", "busy", "out_of_paper"]


class TicketPrinter(Protocol):
    def send(self, data: bytes) -> None: ...
    def status(self) -> PrinterStatus: ...
    def close(self) -> None: ...


def can_print(status: PrinterStatus | None) -> bool:
    """Paper near its end still prints; out, cover open, offline or not known yet does not."""
    return status is not None and status.can_print


class PrintWorker:
    def __init__(
        self,
        open_printer: Callable[[], TicketPrinter],
        render: Callable[[Ticket], bytes],
        store: TicketStore,
        *,
        poll_s: float = 2.0,
        on_status: Callable[[PrinterStatus], None] = lambda _s: None,
        on_activity: Callable[[Activity], None] = lambda _a: None,
        on_printed: Callable[[Ticket], None] = lambda _t: None,
        on_unprintable: Callable[[Ticket, str], None] = lambda _t, _why: None,
        stuck_after_s: float = 60.0,
    ) -> None:
        self._open = open_printer
        self._render = render
        self.store = store
        self.poll_s = poll_s
        self._on_status = on_status
        self._on_activity = on_activity
        self._on_printed = on_printed
        self._on_unprintable = on_unprintable
        self.stuck_after_s = stuck_after_s
        self._beat = time.monotonic()  # the loop's last turn: a stuck line stops it
        self.unprintable: dict[str, str] = {}  # ticket id -> number, set aside until a restart
        self._printer: TicketPrinter | None = None
        self._status: PrinterStatus | None = None  # None until the first poll
        self._jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="printer", daemon=True)

    @property
    def status(self) -> PrinterStatus | None:
        return self._status

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def healthy(self) -> bool:
        """Running and not stuck: the loop turned within ``stuck_after_s``."""
        return self.alive and time.monotonic() - self._beat < self.stuck_after_s

    def pending(self) -> list[Ticket]:
        """The tickets kept for printing, oldest first; unprintable ones are not."""
        return [t for t in self.store.pending_prints() if t.id not in self.unprintable]

    def submit(self, ticket_id: str) -> None:
        """Print this (durable) ticket as soon as the printer can."""
        self._jobs.put(ticket_id)

    def close(self) -> None:
        self._stop.set()
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._printer is not None:
            self._printer.close()
            self._printer = None

    # the thread

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set():
            self._beat = time.monotonic()
            try:
                job = self._jobs.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                job = None
            if self._stop.is_set():
                break
            try:
                if job is None or self._status is None:
                    self._poll()
                    next_poll = time.monotonic() + self.poll_s
                    if can_print(self._status):
                        self._print_pending()
                if job is not None:
                    self._print_one(job)
            except Exception:
                log.exception("print worker error; going on")
                next_poll = time.monotonic() + self.poll_s

    def _port(self) -> TicketPrinter | None:
        if self._printer is None:
            try:
                self._printer = self._open()
            except PrinterError as exc:
                log.debug("%s; trying again in %.1f s", exc, self.poll_s)
        return self._printer

    def _drop_port(self) -> None:
        if self._printer is not None:
            self._printer.close()
            self._printer = None

    def _poll(self) -> PrinterStatus:
        printer = self._port()
        try:
            status = offline("unplugged") if printer is None else printer.status()
        except GarbledReply as exc:
            log.debug("printer status: %s", exc)
            status = offline("garbled")
        except PrinterError as exc:
            log.debug("printer status: %s", exc)
            status = offline("unplugged")
        if status.fault is not None:
            self._drop_port()  # a printer plugged back, maybe as a new tty, gets a fresh port
        self._set_status(status)
        return status

    def _set_status(self, status: PrinterStatus) -> None:
        changed = status != self._status
        self._status = status
        if changed:
            log.info("printer %s (%s)", status.state, status)
            self._on_status(status)
        self._on_activity("ready" if can_print(status) else "out_of_paper")

    def _print_pending(self) -> None:
        for ticket in self.pending():
            if self._stop.is_set() or not self._print(ticket):
                return

    def _print_one(self, ticket_id: str) -> None:
        try:
            ticket = self.store.ticket(ticket_id)
        except TicketError:
            log.warning("asked to print unknown ticket %s", ticket_id)
            return
        if ticket.printed or ticket.state != "waiting" or ticket.id in self.unprintable:
            return  # printed by a reprint already, or called before the paper came back
        if can_print(self._status):
            self._print(ticket)
        # otherwise kept: _print_pending prints it once the printer is ready again

    def _print(self, ticket: Ticket) -> bool:
        """Send one ticket and confirm by status; False when the printer stopped."""
        self._beat = time.monotonic()
        try:
            data = self._render(ticket)
        except Exception as exc:  # one bad ticket must not stop the others
            log.error("ticket %s cannot be printed: %s", ticket.number, exc)
            self.unprintable[ticket.id] = ticket.number
            self._on_unprintable(ticket, str(exc))
            return True
        printer = self._port()
        if printer is None:
            self._set_status(offline("unplugged"))
            return False
        self._on_activity("busy")
        try:
            printer.send(data)
        except PrinterError as exc:
            log.warning("ticket %s not printed: %s", ticket.number, exc)
            self._drop_port()
            self._set_status(offline("unplugged"))
            return False
        status = self._poll()
        if not can_print(status):
            return False
        self.store.mark_printed(ticket.id)
        self._on_printed(ticket)
        return True
