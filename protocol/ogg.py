"""Ogg pages and Opus headers: the one timeline a site's streams carry (RFC 3533, 7845).

Every mount the controller sources is Opus in Ogg, and its OpusTags header
carries ``XASO_EPOCH_MS``: the wall-clock instant (ms since the Unix epoch) at
which every speaker plays the stream's first sample. A page's granule
position counts 48 kHz samples, pre-skip included, so stream sample ``s``
(``granule - pre_skip``) is heard at ``epoch_ms + s / 48``. The instant is in
the stream, not in the command: a pull that restarts is a new stream with its
own epoch, and a speaker joining late reads it from the headers Icecast keeps
for late listeners. A stream without the tag (an older controller) plays
from wherever it is joined, as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

EPOCH_TAG = "XASO_EPOCH_MS"
OPUS_RATE = 48_000  # granule positions of Opus are always 48 kHz
CAPTURE = b"OggS"
BOS = 0x02  # a page's header type: the first page of a logical stream
CONTINUED = 0x01  # the page's first packet began on the page before
_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, type, granule, serial, seq, crc, n
MAX_PAGE = _HEADER.size + 255 + 255 * 255


class OggError(ValueError):
    """Bytes that are not the Ogg or Opus the stream should carry."""


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def crc32(data: bytes) -> int:
    """Ogg's CRC: polynomial 0x04c11db7, unreflected, no initial or final XOR."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True)
class Page:
    header_type: int
    granule: int  # -1: no packet ends on this page
    serial: int
    sequence: int
    segments: tuple[int, ...]  # the lacing values
    body: bytes
    raw: bytes = field(default=b"", compare=False, repr=False)  # as read, CRC checked

    @property
    def bos(self) -> bool:
        return bool(self.header_type & BOS)

    def packets(self) -> list[bytes]:
        """The packets that end on this page (a packet continued from before: its tail)."""
        out, pos, start = [], 0, 0
        for size in self.segments:
            pos += size
            if size < 255:
                out.append(self.body[start:pos])
                start = pos
        return out

    def to_bytes(self) -> bytes:
        if self.raw:
            return self.raw
        head = _HEADER.pack(
            CAPTURE, 0, self.header_type, self.granule, self.serial, self.sequence, 0,
            len(self.segments),
        )  # fmt: skip
        raw = head + bytes(self.segments) + self.body
        return raw[:22] + struct.pack("<I", crc32(raw)) + raw[26:]


def lacing(size: int) -> tuple[int, ...]:
    return (255,) * (size // 255) + (size % 255,)


class PageReader:
    """Pages out of a byte stream fed in pieces; bytes before a capture pattern are skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Page]:
        self._buf += data
        pages: list[Page] = []
        while True:
            at = self._buf.find(CAPTURE)
            if at < 0:
                del self._buf[: max(0, len(self._buf) - 3)]
                return pages
            del self._buf[:at]
            if len(self._buf) < _HEADER.size:
                return pages
            _, version, kind, granule, serial, seq, crc, n = _HEADER.unpack_from(self._buf)
            head = _HEADER.size + n
            if len(self._buf) < head:
                return pages
            segments = tuple(self._buf[_HEADER.size : head])
            end = head + sum(segments)
            if len(self._buf) < end:
                return pages
            raw = bytes(self._buf[:end])
            if version != 0 or crc32(raw[:22] + bytes(4) + raw[26:]) != crc:
                del self._buf[:1]  # not a page after all: look for the next one
                continue
            del self._buf[:end]
            pages.append(Page(kind, granule, serial, seq, segments, raw[head:], raw))


def opus_pre_skip(head: bytes) -> int:
    """The pre-skip of an OpusHead packet: samples the decoder drops at the start."""
    if len(head) < 19 or not head.startswith(b"OpusHead"):
        raise OggError("not an OpusHead packet")
    return int(struct.unpack_from("<H", head, 10)[0])


def opus_tags(packet: bytes) -> tuple[bytes, list[str]]:
    """The vendor string and the comments (``KEY=value``) of an OpusTags packet."""
    if not packet.startswith(b"OpusTags"):
        raise OggError("not an OpusTags packet")
    try:
        (n,) = struct.unpack_from("<I", packet, 8)
        vendor = packet[12 : 12 + n]
        pos = 12 + n
        (count,) = struct.unpack_from("<I", packet, pos)
        pos += 4
        comments = []
        for _ in range(count):
            (n,) = struct.unpack_from("<I", packet, pos)
            comments.append(packet[pos + 4 : pos + 4 + n].decode("utf-8", "replace"))
            pos += 4 + n
    except struct.error as exc:
        raise OggError("a truncated OpusTags packet") from exc
    return vendor, comments


def epoch_of(tags_packet: bytes) -> int | None:
    """The ``XASO_EPOCH_MS`` of an OpusTags packet, or None (an untimed stream)."""
    for comment in opus_tags(tags_packet)[1]:
        key, _, value = comment.partition("=")
        if key.upper() == EPOCH_TAG and value.isdigit():
            return int(value)
    return None


def with_epoch(tags_page: Page, epoch_ms: int) -> Page:
    """The OpusTags page with ``XASO_EPOCH_MS`` set (any earlier one replaced)."""
    (packet,) = tags_page.packets() or [b""]
    if tags_page.header_type & CONTINUED or (
        len(tags_page.segments) and tags_page.segments[-1] == 255
    ):
        raise OggError("the OpusTags packet spans pages")
    vendor, comments = opus_tags(packet)
    kept = [c for c in comments if c.partition("=")[0].upper() != EPOCH_TAG]
    kept.append(f"{EPOCH_TAG}={epoch_ms}")
    body = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(kept))
    for comment in kept:
        raw = comment.encode()
        body += struct.pack("<I", len(raw)) + raw
    if len(body) >= 255 * 255:
        raise OggError("the OpusTags packet is too long for one page")
    return replace(tags_page, segments=lacing(len(body)), body=body, raw=b"")


def sample_instant_ms(epoch_ms: float, sample: int) -> float:
    """When stream sample ``sample`` (granule less pre-skip) is heard, on the wall clock."""
    return epoch_ms + sample * 1000 / OPUS_RATE
