"""The thermal printer on a serial line: send ticket bytes, ask its status.

The only importer of pyserial in kiosk/. The port is opened with
`serial.serial_for_url`, so `/dev/ttyUSB0`, `loop://` and a pseudo-terminal all
work (python-escpos's own Serial ignores URLs). Flow control is always on: at
9600 baud without it the printer's buffer overflows and image bytes print as text.

An unplugged printer fails in more ways than `SerialException`: termios calls
(flush, reset) raise `termios.error`, and a vanished device raises `OSError`.
Every one of them is a `PrinterError` here, so the print worker drops the port
and opens it again, by a name resolved afresh (a glob, or a /dev/serial/by-id
link that udev points at the new tty), when the printer comes back.
"""

from __future__ import annotations

import contextlib
import glob
import termios
from dataclasses import dataclass
from typing import Literal

import serial
from escpos.constants import RT_STATUS

# DLE EOT n: real-time status requests, answered even while the printer is busy.
STATUS_PRINTER = 1
STATUS_OFFLINE_CAUSE = 2
STATUS_PAPER = 4

# Every status byte has bit 0 = 0, bit 1 = 1, bit 4 = 1 and bit 7 = 0; anything
# else is not a status reply (noise, or a wrong baud rate). Bit 0 being 0 also
# means a reply is never XON or XOFF, so xonxoff flow control cannot eat it.
_FIXED_MASK = 0x93
_FIXED_BITS = 0x12
_OFFLINE = 0x08  # n=1
_COVER_OPEN = 0x04  # n=2
_STOPPED_PAPER_END = 0x20  # n=2
_PAPER_NEAR_END = 0x0C  # n=4
_PAPER_OUT = 0x60  # n=4
_GLOB_CHARS = frozenset("*?[")
_LINE_ERRORS = (serial.SerialException, termios.error, OSError)

Paper = Literal["ok", "near_end", "out", "unknown"]
Cover = Literal["open", "closed", "unknown"]
Fault = Literal["unplugged", "silent", "garbled"]
State = Literal["ready", "near_end", "paper_out", "cover_open", "error", "offline"]


class PrinterError(Exception):
    """The serial line failed, or the printer answered with something that is not status."""


class GarbledReply(PrinterError):
    """Bytes came back that are not the printer's status (wrong baud rate, bad cable)."""


@dataclass(frozen=True)
class PrinterStatus:
    """What the kiosk knows of its printer; a printer that does not answer is never paper "ok"."""

    online: bool
    paper: Paper = "unknown"
    cover: Cover = "unknown"
    fault: Fault | None = None  # why nothing could be read: then paper and cover are unknown

    @property
    def state(self) -> State:
        """One word for the screen and the alerts; an open cover comes before the paper
        (many printers' paper sensor reads "out" while the cover is open)."""
        if self.fault is not None:
            return "offline"
        if self.cover == "open":
            return "cover_open"
        if self.paper == "out":
            return "paper_out"
        if not self.online:
            return "error"
        return "near_end" if self.paper == "near_end" else "ready"

    @property
    def can_print(self) -> bool:
        """Paper near its end still prints; anything else but ready does not."""
        return self.state in ("ready", "near_end")


def offline(fault: Fault) -> PrinterStatus:
    return PrinterStatus(online=False, fault=fault)


def parse_status(printer: int, offline_cause: int, paper_sensor: int) -> PrinterStatus:
    """Status from the replies to DLE EOT 1, 2 and 4; raises GarbledReply on a bad byte."""
    for n, byte in ((1, printer), (2, offline_cause), (4, paper_sensor)):
        if byte & _FIXED_MASK != _FIXED_BITS:
            raise GarbledReply(f"not a status reply to DLE EOT {n}: 0x{byte:02x} (wrong baud?)")
    if paper_sensor & _PAPER_OUT or offline_cause & _STOPPED_PAPER_END:
        paper: Paper = "out"
    elif paper_sensor & _PAPER_NEAR_END:
        paper = "near_end"
    else:
        paper = "ok"
    return PrinterStatus(
        online=not printer & _OFFLINE,
        paper=paper,
        cover="open" if offline_cause & _COVER_OPEN else "closed",
    )


def resolve_port(url: str) -> str:
    """The port to open now: a glob (``/dev/ttyUSB*``) names the first match at each open."""
    if not _GLOB_CHARS & set(url):
        return url
    found = sorted(glob.glob(url))
    if not found:
        raise PrinterError(f"no printer at {url}: is it plugged in?")
    return found[0]


class SerialTicketPrinter:
    """An ESC/POS printer on a serial port or URL; bytes come from kiosk.receipt.render."""

    def __init__(
        self,
        url: str,
        baudrate: int = 115200,
        *,
        timeout_s: float = 2,
        flow_control: Literal["rtscts", "xonxoff"] = "rtscts",
    ) -> None:
        self.timeout_s = timeout_s
        self.path = resolve_port(url)
        try:
            self._port = serial.serial_for_url(
                self.path,
                baudrate=baudrate,
                timeout=timeout_s,
                rtscts=flow_control == "rtscts",
                xonxoff=flow_control == "xonxoff",
            )
        except (*_LINE_ERRORS, ValueError) as exc:
            raise PrinterError(f"cannot open printer port {url}: {exc}") from exc
        self._baudrate = baudrate

    def wire_seconds(self, n_bytes: int) -> float:
        """Time on the wire at this baud rate, 8N1: ten bits a byte."""
        return n_bytes * 10 / self._baudrate

    def send(self, data: bytes) -> None:
        """Write a whole ticket; the printer's flow control paces us."""
        # A ticket takes wire_seconds(len(data)); a stalled printer gets timeout_s on top.
        try:
            self._port.write_timeout = self.wire_seconds(len(data)) + self.timeout_s
            written = self._port.write(data)
            self._port.flush()
        except _LINE_ERRORS as exc:  # includes SerialTimeoutException
            raise PrinterError(f"printer write failed: {exc}") from exc
        if written is not None and written != len(data):
            raise PrinterError(f"printer took {written} of {len(data)} bytes")

    def _query(self, n: int) -> int | None:
        """One DLE EOT n request; None when the printer does not answer in time."""
        if self._port.in_waiting:
            raise GarbledReply(f"bytes nobody asked for before DLE EOT {n}")
        self._port.write(RT_STATUS + bytes([n]))
        self._port.flush()
        reply = self._port.read(1)
        return reply[0] if reply else None

    def status(self) -> PrinterStatus:
        """Ask the printer twice; silence is offline, a dead line is PrinterError.

        A printer answers each request with one byte, the same both times.
        Bytes nobody asked for, or two rounds that differ, are a garbled line,
        never a paper reading (random bytes pass the fixed-bit check one in 16).
        """
        rounds: list[tuple[int, ...]] = []
        try:
            self._port.reset_input_buffer()  # whatever came before we asked
            for _ in range(2):
                replies: list[int] = []
                for n in (STATUS_PRINTER, STATUS_OFFLINE_CAUSE, STATUS_PAPER):
                    reply = self._query(n)
                    if reply is None:
                        return offline("silent")
                    replies.append(reply)
                rounds.append(tuple(replies))
            extra = self._port.in_waiting
        except _LINE_ERRORS as exc:
            raise PrinterError(f"printer line failed: {exc}") from exc
        if extra or rounds[0] != rounds[1]:
            raise GarbledReply(f"printer replies are not status: {rounds} and {extra} more bytes")
        return parse_status(*rounds[0])

    def close(self) -> None:
        with contextlib.suppress(*_LINE_ERRORS):  # the device may be gone already
            self._port.close()

    def __enter__(self) -> SerialTicketPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
