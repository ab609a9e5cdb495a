"""Reads ESC/POS bytes back into commands: the tests' check and the demo's printer.

It knows only the commands python-escpos emits for our tickets, plus the
real-time status request DLE EOT n, and fails on any other byte, so a surprise
in the stream fails a test instead of passing quietly. ``parse_one`` reads one
command at a time and says when the stream is cut short, so a simulated
printer on a serial line can parse bytes as they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

ESC, GS, LF, DLE, EOT = 0x1B, 0x1D, 0x0A, 0x10, 0x04

# Commands with a fixed number of parameter bytes: (prefix, command byte) -> count.
_FIXED = {
    (ESC, ord("@")): 0,  # initialise
    (ESC, ord("a")): 1,  # align
    (ESC, ord("!")): 1,  # print mode (size)
    (ESC, ord("E")): 1,  # bold
    (ESC, ord("t")): 1,  # code page
    (ESC, ord("d")): 1,  # print and feed n lines
    (GS, ord("!")): 1,  # character size
}


@dataclass(frozen=True)
class Command:
    """A command and its parameter bytes, e.g. Command("ESC a", b"\\x01")."""

    name: str
    params: bytes = b""


@dataclass(frozen=True)
class Text:
    data: bytes


@dataclass(frozen=True)
class Raster:
    """GS v 0: a one-bit image, bit 1 a printed dot."""

    mode: int
    width_bytes: int
    height: int
    data: bytes

    def image(self) -> Image.Image:
        """As a Pillow '1' image in the ticket's convention: black (0) ink on white (1)."""
        inverted = bytes(b ^ 0xFF for b in self.data)
        return Image.frombytes("1", (self.width_bytes * 8, self.height), inverted)


@dataclass(frozen=True)
class Code2D:
    """GS ( k: cn, fn and the rest of the parameters."""

    cn: int
    fn: int
    data: bytes


@dataclass(frozen=True)
class Cut:
    mode: int
    feed: int | None  # n of GS V 65/66 n; None for GS V 0/1


@dataclass(frozen=True)
class StatusRequest:
    """DLE EOT n: the host asks for real-time status n (1 printer, 2 offline cause, 4 paper)."""

    n: int


Item = Command | Text | Raster | Code2D | Cut | StatusRequest


class Truncated(ValueError):
    """The stream ends inside a command: wait for more bytes."""


def _name(prefix: int, cmd: int) -> str:
    return f"{'ESC' if prefix == ESC else 'GS'} {chr(cmd)}"


def parse(stream: bytes) -> list[Item]:
    """The stream as a list of commands, text runs and line feeds (Command('LF'))."""
    items: list[Item] = []
    i = 0
    while i < len(stream):
        item, i = parse_one(stream, i)
        items.append(item)
    return items


def parse_one(stream: bytes, i: int) -> tuple[Item, int]:
    """The item starting at ``i`` and where the next one starts; Truncated if cut short.

    A text run ends at the first control byte; at the very end of the stream it
    may continue in bytes still to come, which only a caller reading a live
    line needs to mind (the ticket's commands always follow text with LF).
    """
    byte = stream[i]
    if byte == LF:
        return Command("LF"), i + 1
    if byte == DLE:
        _need(stream, i, 3)
        if stream[i + 1] != EOT:
            raise ValueError(f"DLE 0x{stream[i + 1]:02x} at {i} is not DLE EOT")
        return StatusRequest(stream[i + 2]), i + 3
    if byte in (ESC, GS):
        return _parse_command(stream, i)
    if byte < 0x20:
        raise ValueError(f"unexpected control byte 0x{byte:02x} at {i}")
    end = i
    while end < len(stream) and stream[end] >= 0x20:
        end += 1
    return Text(stream[i:end]), end


def _need(stream: bytes, i: int, n: int) -> None:
    if i + n > len(stream):
        raise Truncated(f"truncated command at {i}")


def _parse_command(stream: bytes, i: int) -> tuple[Item, int]:
    _need(stream, i, 2)
    prefix, cmd = stream[i], stream[i + 1]
    if (prefix, cmd) in _FIXED:
        n = _FIXED[(prefix, cmd)]
        _need(stream, i + 2, n)
        return Command(_name(prefix, cmd), stream[i + 2 : i + 2 + n]), i + 2 + n
    if prefix == GS and cmd == ord("v"):
        _need(stream, i, 8)
        if stream[i + 2] != ord("0"):
            raise ValueError(f"GS v {stream[i + 2]:#x} is not GS v 0")
        mode, xl, xh, yl, yh = stream[i + 3 : i + 8]
        width_bytes, height = xl + 256 * xh, yl + 256 * yh
        size = width_bytes * height
        _need(stream, i + 8, size)
        return Raster(mode, width_bytes, height, stream[i + 8 : i + 8 + size]), i + 8 + size
    if prefix == GS and cmd == ord("("):
        _need(stream, i, 3)
    if prefix == GS and cmd == ord("(") and stream[i + 2 : i + 3] == b"k":
        _need(stream, i, 7)
        length = stream[i + 3] + 256 * stream[i + 4]
        _need(stream, i + 5, length)
        body = stream[i + 5 : i + 5 + length]
        return Code2D(body[0], body[1], body[2:]), i + 5 + length
    if prefix == GS and cmd == ord("V"):
        _need(stream, i, 3)
        mode = stream[i + 2]
        if mode in (65, 66):
            _need(stream, i, 4)
            return Cut(mode, stream[i + 3]), i + 4
        return Cut(mode, None), i + 3
    raise ValueError(f"unknown command {_name(prefix, cmd)!r} at {i}")


def qr_data(items: list[Item]) -> bytes:
    """The data stored by GS ( k <fn 80> for a QR code (cn 49), with its m byte removed."""
    stored = [it.data for it in items if isinstance(it, Code2D) and it.cn == 49 and it.fn == 80]
    if len(stored) != 1:
        raise ValueError(f"expected one QR store command, found {len(stored)}")
    return stored[0][1:]
