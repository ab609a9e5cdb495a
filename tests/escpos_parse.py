"""A small ESC/POS parser for tests: reads a ticket's bytes back into commands.

It knows only the commands python-escpos emits for our tickets and fails on any
other byte, so a surprise in the stream fails the test instead of passing quietly.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

ESC, GS, LF = 0x1B, 0x1D, 0x0A

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


Item = Command | Text | Raster | Code2D | Cut


def _name(prefix: int, cmd: int) -> str:
    return f"{'ESC' if prefix == ESC else 'GS'} {chr(cmd)}"


def parse(stream: bytes) -> list[Item]:
    """The stream as a list of commands, text runs and line feeds (Command('LF'))."""
    items: list[Item] = []
    i = 0
    while i < len(stream):
        byte = stream[i]
        if byte == LF:
            items.append(Command("LF"))
            i += 1
        elif byte in (ESC, GS):
            i = _parse_command(stream, i, items)
        elif byte < 0x20:
            raise ValueError(f"unexpected control byte 0x{byte:02x} at {i}")
        else:
            end = i
            while end < len(stream) and stream[end] >= 0x20:
                end += 1
            items.append(Text(stream[i:end]))
            i = end
    return items


def _need(stream: bytes, i: int, n: int) -> None:
    if i + n > len(stream):
        raise ValueError(f"truncated command at {i}")


def _parse_command(stream: bytes, i: int, items: list[Item]) -> int:
    _need(stream, i, 2)
    prefix, cmd = stream[i], stream[i + 1]
    if (prefix, cmd) in _FIXED:
        n = _FIXED[(prefix, cmd)]
        _need(stream, i + 2, n)
        items.append(Command(_name(prefix, cmd), stream[i + 2 : i + 2 + n]))
        return i + 2 + n
    if prefix == GS and cmd == ord("v"):
        _need(stream, i, 8)
        if stream[i + 2] != ord("0"):
            raise ValueError(f"GS v {stream[i + 2]:#x} is not GS v 0")
        mode, xl, xh, yl, yh = stream[i + 3 : i + 8]
        width_bytes, height = xl + 256 * xh, yl + 256 * yh
        size = width_bytes * height
        _need(stream, i + 8, size)
        items.append(Raster(mode, width_bytes, height, stream[i + 8 : i + 8 + size]))
        return i + 8 + size
    if prefix == GS and cmd == ord("(") and stream[i + 2 : i + 3] == b"k":
        _need(stream, i, 7)
        length = stream[i + 3] + 256 * stream[i + 4]
        _need(stream, i + 5, length)
        body = stream[i + 5 : i + 5 + length]
        items.append(Code2D(body[0], body[1], body[2:]))
        return i + 5 + length
    if prefix == GS and cmd == ord("V"):
        _need(stream, i, 3)
        mode = stream[i + 2]
        if mode in (65, 66):
            _need(stream, i, 4)
            items.append(Cut(mode, stream[i + 3]))
            return i + 4
        items.append(Cut(mode, None))
        return i + 3
    raise ValueError(f"unknown command {_name(prefix, cmd)!r} at {i}")


def qr_data(items: list[Item]) -> bytes:
    """The data stored by GS ( k <fn 80> for a QR code (cn 49), with its m byte removed."""
    stored = [it.data for it in items if isinstance(it, Code2D) and it.cn == 49 and it.fn == 80]
    if len(stored) != 1:
        raise ValueError(f"expected one QR store command, found {len(stored)}")
    return stored[0][1:]
