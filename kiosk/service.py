"""The kiosk service: what the buttons and the pages do, with the printer and the calls.

It knows no host: records go out through the ``emit`` it is given, and its
pages through the ``serve`` it is given (kiosk/role.py binds both).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kiosk.bookings import KioskBookings
from kiosk.numbering import RATINGS, QueuePolicy
from kiosk.office import KioskError, Office, OfficeSettings, counter_services
from kiosk.officers import Officers
from kiosk.printer import PrinterStatus, SerialTicketPrinter
from kiosk.printing import Activity, PrintWorker, TicketPrinter, can_print
from kiosk.receipt import PrinterProfile, TicketContent, render
from kiosk.screen import come_back
from kiosk.ticket_store import Ticket, TicketStore
from protocol.events import Body, TicketCalled, TicketServed, TicketSkipped, TicketTransferred
from protocol.events import PrinterStatus as PrinterStatusEvent

if TYPE_CHECKING:
    from broadcast.audio.player import Player
    from broadcast.audio.tts import SpeechEngine
    from kiosk.buttons import ButtonPanel
    from kiosk.caller import Caller
    from kiosk.config import KioskSection
    from kiosk.office_log import Conflict
    from kiosk.shared_queue import SharedQueue

log = logging.getLogger(__name__)
Emit = Callable[[Body], None]


class Pages(Protocol):
    """The kiosk's pages as the service sees them: a server it starts and stops."""

    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class Changes:
    """A version number that grows with every change the pages show; SSE streams watch it."""

    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.version += 1

    def close(self) -> None:
        self.closed = True


def profile_of(cfg: KioskSection) -> PrinterProfile:
    dots = cfg.printer_dots or (384 if cfg.paper_mm == 58 else 576)
    return PrinterProfile(
        paper_mm=cfg.paper_mm,
        dots=dots,
        vietnamese=cfg.vietnamese,
        codepage=cfg.codepage,
        native_qr=cfg.native_qr,
    )


class Kiosk:
    def __init__(
        self,
        cfg: KioskSection,
        state_dir: Path,
        emit: Emit,
        now_ms: Callable[[], int],
        *,
        pin_factory: Any = None,
        player: Player | None = None,
        engine: SpeechEngine | None = None,
        open_printer: Callable[[], TicketPrinter] | None = None,
        serve: Callable[[Kiosk], Pages] | None = None,
        shared: SharedQueue | None = None,
        device_id: str | None = None,
    ) -> None:
        """``serve`` starts the pages (kiosk.role gives the web server); None: no pages.
        ``shared``: the queue of the office's kiosks, which the kiosk then owns.
        ``device_id``: this agent's, for a QR code to the controller's page."""
        self.cfg = cfg
        self._emit = emit
        self.now_ms = now_ms
        self.changes = Changes()
        self.device_id = device_id  # the controller's ticket page names the kiosk
        self.store = TicketStore(state_dir / "tickets.sqlite3")
        self.shared = shared
        replica = None
        if shared is not None:
            from kiosk.replica import Replica

            replica = Replica(shared, self.store)
            shared.on_change = self._peers_acted
            shared.on_conflict = self._call_lost
        # counter -> the number its call lost to another kiosk's counter during a cut, until
        # it calls again (shown on its page)
        self.taken: dict[int, dict[str, Any]] = {}
        self._told_pending: list[str] = []  # the held tickets the last printer.status named
        self.officers = Officers(
            cfg.officers,
            cfg.counters,
            session_s=cfg.session_hours * 3600,
            attempts=cfg.pin_attempts,
            lockout_s=cfg.pin_lockout_s,
        )
        self.office = Office(
            self.store,
            OfficeSettings(
                services=tuple(cfg.services),
                counters=cfg.counters,
                counter_services=counter_services(cfg.counter_services),
                policy=QueuePolicy(cfg.queue_mode, cfg.interleave_every),
                tz=cfg.tz,
            ),
            on_event=self._record,
            replica=replica,
        )
        self._replica = replica
        self.bookings = KioskBookings(self.office, int(cfg.booking_grace_min * 60_000))
        self.profile = profile_of(cfg)
        self.printer = PrintWorker(
            open_printer
            or (
                lambda: SerialTicketPrinter(
                    cfg.printer_url, cfg.printer_baud, flow_control=cfg.printer_flow
                )
            ),
            self.render,
            self.store,
            poll_s=cfg.status_poll_s,
            on_status=self._printer_status,
            on_activity=self._activity,
            on_printed=self._printed,
            on_unprintable=lambda _t, _why: self._printer_status(self.printer.status),
        )
        self.panel: ButtonPanel | None = None
        if cfg.buttons:
            from kiosk.buttons import Binding, ButtonPanel

            self.panel = ButtonPanel(
                [Binding(b.service, b.pin, b.led_pin, b.priority) for b in cfg.buttons],
                self._pressed,
                bounce_ms=cfg.bounce_ms,
                pin_factory=pin_factory,
            )
        self._own_player: Player | None = None
        self.caller: Caller | None = self._caller(state_dir, player, engine)
        self._serve = serve
        self.web: Pages | None = None
        self.notice: dict[str, Any] | None = None  # the last button press refused, for the screen

    def _caller(
        self, state_dir: Path, player: Player | None, engine: SpeechEngine | None
    ) -> Caller | None:
        """The hall speaker: the speaker role's player on this device, or one of our own;
        none when another device is the hall speaker ("remote") or there is none."""
        if self.cfg.voice == "remote" or (player is None and self.cfg.voice == "off"):
            return None
        from broadcast.audio.tts import EspeakEngine
        from kiosk.caller import Caller

        if player is None:
            from broadcast.audio.native_decoders import decoder_pool
            from broadcast.audio.player import Player
            from broadcast.audio.sinks import AlsaSink, Sink, WavFileSink

            sink: Sink = (
                WavFileSink(self.cfg.wav_dir or state_dir / "calls")
                if self.cfg.voice == "wav"
                else AlsaSink(self.cfg.alsa_device)
            )
            # its calls are prepared clips: mpg123 or opusdec, and no ffmpeg waiting
            player = self._own_player = Player(sink, on_event=self._emit, decoders=decoder_pool())
        return Caller(
            player,
            engine or EspeakEngine(),
            state_dir / "call-clips",
            now_ms=self.now_ms,
            on_event=self._emit,
            priority=self.cfg.call_priority,
            repeats=self.cfg.call_repeats,
        )

    # lifecycle

    def start(self) -> None:
        if self._replica is not None:
            self._replica.mirror()  # the office's log is the truth: the file follows it
        self.printer.start()
        for ticket in self.store.pending_prints():
            self.printer.submit(ticket.id)  # issued before a crash or a power cut
        if self.caller is not None:
            self.caller.start()
        if self._serve is not None:
            self.web = self._serve(self)
            self.web.start()

    def alive(self) -> bool:
        """For the agent's watchdog: every thread the kiosk started still runs."""
        return (
            self.printer.healthy()
            and (self.caller is None or self.caller.alive)
            and (self.web is None or self.web.alive)
        )

    def close(self) -> None:
        self.changes.close()
        if self.web is not None:
            self.web.close()
        if self.panel is not None:
            self.panel.close()
        self.printer.close()
        if self.caller is not None:
            self.caller.close()
        if self._own_player is not None:
            self._own_player.close()
        if self.shared is not None:
            self.shared.close()
        self.store.close()

    # wiring

    def _call_lost(self, conflict: Conflict) -> None:
        """A call of one of this kiosk's counters lost to an earlier one made elsewhere."""
        e, won = conflict.entry, conflict.winner
        if e.kind != "call" or won is None or self.shared is None or e.kiosk != self.shared.kiosk:
            return
        number = self.shared.settled().tickets[e.ticket].number
        self.taken[e.counter] = {"number": number, "by": won.counter}
        self.changes.bump()

    def _peers_acted(self) -> None:
        """Another kiosk of the office issued or called: the file and the pages follow."""
        if self._replica is not None:
            self._replica.mirror()
        self.changes.bump()

    def _record(self, body: Body) -> None:
        self._emit(body)
        self.changes.bump()
        if isinstance(body, TicketCalled | TicketServed | TicketSkipped) and (
            self.printer.unprintable.pop(body.ticket_id, None) is not None
        ):  # the citizen told the counter their number: nothing is owed any more
            self._printer_status(self.printer.status)
        if self.caller is None:
            return
        if isinstance(body, TicketCalled):
            from kiosk.caller import Call  # loaded with the caller

            self.caller.call(Call(body.number, body.counter, body.ticket_id, self.now_ms()))
        elif isinstance(body, TicketServed | TicketSkipped | TicketTransferred):
            self.caller.moved_on(body.ticket_id)  # its call, if not said yet, is not

    def _printed(self, ticket: Ticket) -> None:
        """A held ticket printed at last: told again, so that the controller does not go on
        showing it as owed (the printer's state itself did not change)."""
        if ticket.number in self._told_pending:
            self._printer_status(self.printer.status)
        else:
            self.changes.bump()

    def _printer_status(self, status: PrinterStatus | None) -> None:
        if status is not None:
            extra: dict[str, Any] = {"fault": status.fault} if status.fault else {}
            if self.printer.unprintable:
                extra["unprintable"] = list(self.printer.unprintable.values())
            self._told_pending = [t.number for t in self.printer.pending()]
            self._emit(
                PrinterStatusEvent(
                    online=status.online,
                    paper=status.paper,
                    cover=status.cover,
                    pending=self._told_pending,
                    state=status.state,
                    **extra,
                )
            )
        self.changes.bump()

    def _activity(self, activity: Activity) -> None:
        if self.panel is not None:
            self.panel.show(activity)

    def _pressed(self, service: str, priority: bool) -> None:
        """A physical button: a refusal (out of hours) goes on the touchscreen, not nowhere."""
        try:
            self.issue(service, priority)
        except KioskError as exc:
            log.info("button %s refused: %s", service, exc)
            self.notice = {"vi": exc.vi, "en": exc.en, "at_ms": self.now_ms()}
            self.changes.bump()

    def render(self, ticket: Ticket) -> bytes:
        service = self.office.service(ticket.service)
        ahead = self.office.people_ahead(ticket)
        wait_s = self.office.wait_s(ticket, ahead, self.now_ms())
        content = TicketContent(
            office=self.cfg.office,
            service_vi=service.name_vi,
            service_en=service.name_en,
            number=ticket.number,
            issued_local=self.office.local_time(ticket.issued_ms),
            people_ahead=ahead,
            status_url=self.cfg.status_url(self.device_id, ticket.id),
            priority=ticket.priority,
            wait_min=None if not wait_s else max(1, math.ceil(wait_s / 60)),
        )
        return render(content, self.profile)

    # what the buttons and the pages do

    def issue(
        self, service: str, priority: bool = False, booking: tuple[str, int] | None = None
    ) -> dict[str, Any]:
        """A number for a citizen: durable first, then queued for the printer."""
        try:
            issued = self.office.issue(service, self.now_ms(), priority=priority, booking=booking)
        except KioskError as exc:
            if exc.code not in ("closed", "limit"):
                raise
            raise come_back(exc, self.office.service(service)) from None
        self.printer.submit(issued.ticket.id)
        status = self.printer.status
        return {
            **self.ticket_view(issued.ticket),
            "people_ahead": issued.people_ahead,
            "wait_s": issued.wait_s,
            "printing": can_print(status),
        }

    def redeem_booking(self, code: object) -> dict[str, Any]:
        """A booked citizen's code: a number now, called at their slot (kiosk/booked.py)."""
        now = self.now_ms()
        booking = self.bookings.find(code, now)
        issued = self.issue(booking.service, booking=(booking.code, booking.slot_ms))
        self.changes.bump()
        slot = self.office.local_time(booking.slot_ms)
        return {**issued, "booked": True, "slot_ms": booking.slot_ms, "slot_local": slot}

    def _call_next(self, counter: int, now: int, officer: str | None) -> Ticket | None:
        """ "Next" with the booked citizens in their places; plain "next" when none is booked."""
        office = self.office
        if not self.bookings.slots_today(now):
            return office.call_next(counter, now, officer)
        office.check_counter(counter)
        chosen = self.bookings.next_for(counter, now)
        if chosen is not None:
            return office.call_number(counter, chosen.number, now, officer)
        if counter in office.store.paused_counters():
            return office.call_next(counter, now, officer)  # its own refusal
        if office.current(counter, now) is not None:
            office.served(counter, now, officer)
        return None

    def counter(
        self,
        counter: int,
        action: str,
        *,
        officer: str | None = None,
        service: str | None = None,
        number: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """One counter action, by the officer signed in there (the pages always give one)."""
        office, now = self.office, self.now_ms()
        office.check_counter(counter)
        if action in ("next", "call") and self.taken.pop(counter, None) is not None:
            self.changes.bump()
        ticket: Ticket | None
        if action == "next":
            ticket = self._call_next(counter, now, officer)
        elif action == "call":
            ticket = office.call_number(counter, number or "", now, officer)
        elif action == "recall":
            ticket = office.recall(counter, now, officer)
        elif action == "skip":
            ticket = office.skip(counter, now, officer)
        elif action == "served":
            ticket = office.served(counter, now, officer)
        elif action == "transfer":
            ticket = office.transfer(counter, service or "", now, officer, note)
        elif action in ("pause", "resume"):
            office.set_paused(counter, action == "pause", officer)
            ticket = None
        else:
            raise KioskError("unknown_action", "Thao tác không hợp lệ", "Unknown action", 404)
        return {
            "counter": counter,
            "action": action,
            "ticket": None if ticket is None else self.ticket_view(ticket),
            "empty": action == "next" and ticket is None,
            "note": None if ticket is None else office.handover_note(ticket.id),
        }

    def rate(self, counter: int, level: int, ticket_id: str | None = None) -> dict[str, Any]:
        ticket = self.office.rate(counter, level, self.now_ms(), ticket_id)
        vi, en = RATINGS[level]
        return {"ticket": self.ticket_view(ticket), "level": level, "vi": vi, "en": en}

    def ticket_view(self, t: Ticket) -> dict[str, Any]:
        service = self.office.service(t.queue)
        return {
            "ticket_id": t.id,
            "number": t.number,
            "service": t.queue,
            "service_vi": service.name_vi,
            "service_en": service.name_en,
            "state": t.state,
            "counter": t.counter,
            "printed": t.printed,
            "priority": t.priority,
            "issued_local": self.office.local_time(t.issued_ms),
            **self.office.wait(t, self.now_ms()).view(),
        }

    def printer_view(self) -> dict[str, Any]:
        status = self.printer.status
        return {
            "known": status is not None,
            "can_print": can_print(status),
            "paper": "unknown",
            "cover": "unknown",
            **(asdict(status) if status is not None else {}),
            "state": "unknown" if status is None else status.state,
            "pending": [t.number for t in self.printer.pending()],
            "unprintable": list(self.printer.unprintable.values()),
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything the pages show, in one JSON document (the SSE payload)."""
        return {
            **self.office.board(self.now_ms()),
            "printer": self.printer_view(),
            "notice": self.notice,
            "taken": {str(c): lost for c, lost in self.taken.items()},
            "version": self.changes.version,
        }

    def telemetry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"printer": self.printer_view()}
        if self.shared is not None:
            out["office_queue"] = self.shared.telemetry()
        return out
