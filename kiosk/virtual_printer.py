"""A thermal printer simulated on the far side of a pseudo-terminal: the demo's and the tests'.

The kiosk opens the pty's slave path as if it were ``/dev/ttyUSB0``; this
class holds the master. It parses what arrives with kiosk.escpos_read,
answers each DLE EOT status request from its own ``paper`` and ``cover_open``
state (which a test or the demo changes: "out" is the paper roll running
out), and turns every ticket, from its first byte to the cut, into a PNG
drawn the way the printer would print it. With no paper or the cover open it
prints nothing, as a real one does. ``answer`` makes it a faulty printer
("silent": never answers; "garbage": answers noise, as at a wrong baud
rate), and ``unplug`` pulls its cable: the kiosk's side of the pty fails and
its path vanishes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import qrcode
from PIL import Image, ImageDraw, ImageFont

from kiosk.escpos_read import (
    Code2D,
    Command,
    Cut,
    Item,
    Raster,
    StatusRequest,
    Text,
    Truncated,
    parse_one,
)

log = logging.getLogger(__name__)
MONO_PATH = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
LINE_PX = 24  # printer font A: 12 x 24 dots
Paper = Literal["ok", "near_end", "out"]
Answer = Literal["status", "silent", "garbage"]

# replies to DLE EOT 1, 2 and 4 (see kiosk.printer.parse_status)
_REPLIES: dict[str, dict[int, int]] = {
    "ok": {1: 0x12, 2: 0x12, 4: 0x12},
    "near_end": {1: 0x12, 2: 0x12, 4: 0x1E},
    "out": {1: 0x1A, 2: 0x32, 4: 0x7E},
}
# cover open: offline, cover bit; the paper sensor of many models then reads "out" too
_COVER_OPEN_REPLIES = {1: 0x1A, 2: 0x16, 4: 0x7E}


@dataclass(frozen=True)
class PrintedTicket:
    data: bytes  # the ticket's bytes, status requests excluded
    items: list[Item]
    png: Path | None
    first_byte_s: float  # time.perf_counter() when its first byte was read


def draw_ticket(items: list[Item], dots: int = 576) -> Image.Image:
    """The ticket as paper: raster strips as sent, text in a monospace font, the QR drawn."""
    canvas = Image.new("1", (dots, 4000), 1)
    draw = ImageDraw.Draw(canvas)
    y, align, big, line = 8, 0, False, ""
    qr_data = b""

    def place(width: int) -> int:
        return (dots - width) // 2 if align == 1 else dots - width if align == 2 else 0

    for it in items:
        if isinstance(it, Command) and it.name == "ESC a":
            align = it.params[0] % 48
        elif isinstance(it, Command) and it.name == "ESC !":
            big = bool(it.params[0] & 0x30)
        elif isinstance(it, Command) and it.name == "GS !":
            big = bool(it.params[0])
        elif isinstance(it, Text):
            line += it.data.decode("ascii", "replace")
        elif isinstance(it, Command) and it.name == "LF":
            size = LINE_PX * (2 if big else 1)
            if line:
                face = ImageFont.truetype(MONO_PATH, size)
                width = int(face.getlength(line))
                draw.text((place(width), y), line, font=face, fill=0)
            y, line = y + size, ""
        elif isinstance(it, Raster):
            image = it.image()
            canvas.paste(image, (place(image.width), y))
            y += image.height
        elif isinstance(it, Code2D) and it.cn == 49 and it.fn == 80:
            qr_data = it.data[1:]
        elif isinstance(it, Code2D) and it.cn == 49 and it.fn == 81 and qr_data:
            code = qrcode.QRCode(box_size=4, border=1)
            code.add_data(qr_data.decode("ascii", "replace"))
            image = code.make_image().get_image().convert("1")
            canvas.paste(image, (place(image.width), y))
            y += image.height
    return canvas.crop((0, 0, dots, min(y + 16, canvas.height)))


class VirtualPrinter:
    """Owns the master of a pty; ``path`` is what the kiosk opens as its printer."""

    def __init__(
        self,
        out_dir: Path | None = None,
        *,
        dots: int = 576,
        on_ticket: Callable[[PrintedTicket], None] | None = None,
    ) -> None:
        self._master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        self.out_dir = out_dir
        self.dots = dots
        self.paper: Paper = "ok"
        self.cover_open = False
        self.answer: Answer = "status"
        self._noise = random.Random(1258)  # noqa: S311 - noise on a test line, not a secret
        self.tickets: list[PrintedTicket] = []
        self.discarded = 0  # tickets sent while out of paper: nothing came out
        self.status_requests = 0
        self._on_ticket = on_ticket
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtual-printer", daemon=True)

    def start(self) -> VirtualPrinter:
        self._thread.start()
        return self

    def wait_tickets(self, count: int, timeout_s: float = 20.0) -> list[PrintedTicket]:
        """Until ``count`` tickets have come out; raises TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.tickets) >= count, timeout_s):
                raise TimeoutError(f"{len(self.tickets)} of {count} tickets printed")
            return list(self.tickets)

    def _run(self) -> None:
        buf = data = b""
        ticket: list[Item] = []
        first_byte_s = read_s = buf_s = 0.0  # buf_s: when buf's first byte was read
        while not self._stop.is_set():
            try:
                if not select.select([self._master], [], [], 0.05)[0]:
                    continue
                chunk = os.read(self._master, 65536)
            except OSError:
                return  # closed: unplugged, or the test is over
            read_s = time.perf_counter()
            buf_s = buf_s if buf else read_s
            buf += chunk
            i = 0
            while i < len(buf):
                try:
                    item, end = parse_one(buf, i)
                except Truncated:
                    break
                except ValueError as exc:
                    log.warning("virtual printer: %s; dropping %d bytes", exc, len(buf) - i)
                    buf, data, ticket, i = b"", b"", [], 0
                    break
                if isinstance(item, Text) and end == len(buf):
                    break  # the text may go on in the next read
                if isinstance(item, StatusRequest):
                    if not self._answer(item.n):
                        return  # unplugged while answering
                else:
                    if not ticket:
                        first_byte_s = buf_s if i == 0 else read_s
                    ticket.append(item)
                    data += buf[i:end]
                    if isinstance(item, Cut):
                        self._finish(ticket, data, first_byte_s)
                        ticket, data = [], b""
                i = end
            buf = buf[i:]

    def _answer(self, n: int) -> bool:
        """Writes the reply to a status request; False once the pty is closed."""
        self.status_requests += 1
        reply = self._reply(n)
        try:
            if reply:
                os.write(self._master, reply)
        except OSError:
            return False
        return True

    def _reply(self, n: int) -> bytes:
        if self.answer == "silent":
            return b""
        if self.answer == "garbage":
            return self._noise.randbytes(self._noise.randint(1, 3))
        replies = _COVER_OPEN_REPLIES if self.cover_open else _REPLIES[self.paper]
        return bytes([replies[n]]) if n in replies else b""

    def _finish(self, items: list[Item], data: bytes, first_byte_s: float) -> None:
        if self.paper == "out" or self.cover_open:
            with self._cond:
                self.discarded += 1
            return
        png = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            png = self.out_dir / f"ticket-{len(self.tickets) + 1:04d}.png"
            draw_ticket(items, self.dots).save(png)
        printed = PrintedTicket(data, items, png, first_byte_s)
        with self._cond:
            self.tickets.append(printed)
            self._cond.notify_all()
        if self._on_ticket is not None:
            self._on_ticket(printed)

    def unplug(self) -> None:
        """The cable pulled: the pty goes away, the kiosk's reads and writes fail."""
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)  # it may be drawing a ticket on a loaded machine
        for fd in (self._slave, self._master):
            with contextlib.suppress(OSError):
                os.close(fd)
