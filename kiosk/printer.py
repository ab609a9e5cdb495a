"""The thermal printer on a serial line: send ticket bytes, ask its status.

The only importer of pyserial in kiosk/. The port is opened with
`serial.serial_for_url`, so `/dev/ttyUSB0`, `loop://` and a pseudo-terminal all
work (python-escpos's own Serial ignores URLs). Flow control is always on: at
9600 baud without it the printer's buffer overflows and image bytes print as text.
"""

from __future__ import annotations

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


class PrinterError(Exception):
    """The serial line failed, or the printer answered with something that is not status."""


@dataclass(frozen=True)
class PrinterStatus:
    """What the kiosk needs to know before it prints; unknown parts read as ok when offline."""

    online: bool
    paper: Literal["ok", "near_end", "out"] = "ok"
    cover_open: bool = False


OFFLINE = PrinterStatus(online=False)


def parse_status(printer: int, offline_cause: int, paper_sensor: int) -> PrinterStatus:
    """Status from the replies to DLE EOT 1, 2 and 4; raises PrinterError on a bad byte."""
    for n, byte in ((1, printer), (2, offline_cause), (4, paper_sensor)):
        if byte & _FIXED_MASK != _FIXED_BITS:
            raise PrinterError(f"not a status reply to DLE EOT {n}: 0x{byte:02x} (wrong baud?)")
    if paper_sensor & _PAPER_OUT or offline_cause & _STOPPED_PAPER_END:
        paper: Literal["ok", "near_end", "out"] = "out"
    elif paper_sensor & _PAPER_NEAR_END:
        paper = "near_end"
    else:
        paper = "ok"
    return PrinterStatus(
        online=not printer & _OFFLINE,
        paper=paper,
        cover_open=bool(offline_cause & _COVER_OPEN),
    )


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
        try:
            self._port = serial.serial_for_url(
                url,
                baudrate=baudrate,
                timeout=timeout_s,
                rtscts=flow_control == "rtscts",
                xonxoff=flow_control == "xonxoff",
            )
        except (serial.SerialException, ValueError) as exc:
            raise PrinterError(f"cannot open printer port {url}: {exc}") from exc
        self._baudrate = baudrate

    def wire_seconds(self, n_bytes: int) -> float:
        """Time on the wire at this baud rate, 8N1: ten bits a byte."""
        return n_bytes * 10 / self._baudrate

    def send(self, data: bytes) -> None:
        """Write a whole ticket; the printer's flow control paces us."""
        # A ticket takes wire_seconds(len(data)); a stalled printer gets timeout_s on top.
        self._port.write_timeout = self.wire_seconds(len(data)) + self.timeout_s
        try:
            written = self._port.write(data)
            self._port.flush()
        except serial.SerialException as exc:  # includes SerialTimeoutException
            raise PrinterError(f"printer write failed: {exc}") from exc
        if written is not None and written != len(data):
            raise PrinterError(f"printer took {written} of {len(data)} bytes")

    def _query(self, n: int) -> int | None:
        """One DLE EOT n request; None when the printer does not answer in time."""
        self._port.reset_input_buffer()
        self._port.write(RT_STATUS + bytes([n]))
        self._port.flush()
        reply = self._port.read(1)
        return reply[0] if reply else None

    def status(self) -> PrinterStatus:
        """Ask the printer; silence or a dead line is offline, a garbled reply is PrinterError."""
        replies: list[int] = []
        try:
            for n in (STATUS_PRINTER, STATUS_OFFLINE_CAUSE, STATUS_PAPER):
                reply = self._query(n)
                if reply is None:
                    return OFFLINE
                replies.append(reply)
        except serial.SerialException:
            return OFFLINE
        return parse_status(*replies)

    def close(self) -> None:
        self._port.close()

    def __enter__(self) -> SerialTicketPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
