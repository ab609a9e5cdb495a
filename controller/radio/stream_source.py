"""The controller's side of streams in step: each encode paced, stamped and sent to its mount.

An encoder (a station pull's ffmpeg, live voice's) writes Opus/Ogg pages as
fast as its input comes. ``Pacer`` takes them, anchors the stream to the wall
clock at its first audio page (that page's last sample is "now"), writes the
instant every speaker plays sample 0 into the OpusTags header
(``protocol.ogg.EPOCH_TAG``: that anchor plus ``PLAYOUT_DELAY_MS``), and lets
each page go no earlier than its last sample's time, so a burst at the input
(a station's server sends seconds at once on connecting) reaches the speakers
in real time. A page later than ``late_ms`` would only be dropped by the speakers,
and so would every page after it: the input lost time it never makes up. A
station's pull then gets ``TooLate`` and starts a new encode; live voice
``rejoin``s: the stream is anchored again at that page with a new epoch on a
new source connection, so the speakers reconnect and play on from the words
that came late, rather than drop all the rest of the session.

``IcecastSource`` sends the pages to the mount by HTTP PUT, byte for byte, so
the granule positions the speakers read are the encoder's own (an ffmpeg
remuxing them to ``icecast://`` would renumber them).
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from controller.radio.streams import StreamServer
from plumbing.clock import wall_ms
from protocol.ogg import OggError, Page, PageReader, opus_pre_skip, sample_instant_ms, with_epoch

PLAYOUT_DELAY_MS = 1000  # from a sample leaving the encoder to every speaker playing it
CONNECT_TIMEOUT_S = 5.0


class TooLate(Exception):
    """The encode fell behind the wall clock by more than the speakers can wait."""


class StreamSourceError(OSError):
    """Icecast refused the source, or its connection failed."""


class IcecastSource:
    """One source connection to a mount: HTTP PUT with the source password, then pages."""

    def __init__(self, streams: StreamServer, mount: str) -> None:
        self.streams, self.mount = streams, mount
        self._sock: socket.socket | None = None

    def open(self) -> None:
        parts = urlsplit(self.streams.url)
        source_url = self.streams.source_url(self.mount)  # checks the mount's name
        assert parts.hostname is not None and source_url
        sock = socket.create_connection((parts.hostname, parts.port or 80), CONNECT_TIMEOUT_S)
        token = base64.b64encode(f"source:{self.streams.source_password}".encode()).decode()
        request = (
            f"PUT {self.mount} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: audio/ogg\r\n"
            "Ice-Public: 0\r\nExpect: 100-continue\r\n\r\n"
        )
        try:
            sock.sendall(request.encode())
            answer = b""
            while b"\r\n\r\n" not in answer and len(answer) < 4096:
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
        except OSError as exc:
            sock.close()
            raise StreamSourceError(f"{self.mount}: {exc}") from exc
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        if status.split(" ")[1:2] not in (["100"], ["200"]):
            sock.close()
            raise StreamSourceError(f"{self.mount}: Icecast answered {status or 'nothing'!r}")
        sock.settimeout(CONNECT_TIMEOUT_S)
        self._sock = sock

    def send(self, data: bytes) -> None:
        if self._sock is None:
            self.open()
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise StreamSourceError(f"{self.mount}: {exc}") from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Pacer:
    """Pages of one encode in; out to ``send`` stamped with the epoch, in wall-clock time."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        *,
        delay_ms: float = PLAYOUT_DELAY_MS,
        late_ms: float | None = None,
        rejoin: Callable[[float], None] | None = None,
        clock: Callable[[], float] = wall_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send, self._clock, self._sleep = send, clock, sleep
        self.delay_ms, self.late_ms = delay_ms, late_ms
        self._rejoin = rejoin  # told how late (ms) before the stream is anchored again
        self.rejoins = 0
        self._reader = PageReader()
        self._headers: list[Page] = []
        self._pre_skip = 0
        self.anchor_ms: float | None = None  # when stream sample 0 left the encoder
        self.epoch_ms: int | None = None
        self.pages_out = 0

    def feed(self, data: bytes) -> None:
        for page in self._reader.feed(data):
            self._page(page)

    def _page(self, page: Page) -> None:
        if page.bos or len(self._headers) == 1:  # OpusHead, then OpusTags
            self._headers = [page] if page.bos else [*self._headers, page]
            if page.bos:
                self._pre_skip = opus_pre_skip((page.packets() or [b""])[0])
            return
        if len(self._headers) == 2:  # the first audio page: the stream starts now
            self._anchor(page)
            self._headers.append(page)  # headers done
        if self.anchor_ms is None:
            raise OggError("audio before the Opus headers")
        due = self.anchor_ms + sample_instant_ms(0, page.granule - self._pre_skip)
        early = due - self._clock()
        if early > 0:
            self._sleep(early / 1000)
        elif self.late_ms is not None and -early > self.late_ms:
            if self._rejoin is None:
                raise TooLate(f"{-early:.0f} ms behind the wall clock")
            self._rejoin(-early)
            self.rejoins += 1
            self._anchor(page)
        self._out(page.to_bytes())

    def _anchor(self, page: Page) -> None:
        """``page`` is due now: its epoch, in the headers sent ahead of it."""
        self.anchor_ms = self._clock() - sample_instant_ms(0, page.granule - self._pre_skip)
        self.epoch_ms = round(self.anchor_ms + self.delay_ms)
        head, tags = self._headers[:2]
        self._out(head.to_bytes() + with_epoch(tags, self.epoch_ms).to_bytes())

    def _out(self, data: bytes) -> None:
        self._send(data)
        self.pages_out += 1
