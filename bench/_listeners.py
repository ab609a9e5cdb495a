"""Many stream listeners in one process: raw HTTP GETs on one mount, every Ogg page timed.

bench/stream_fanout.py starts a few of these workers (``python -m
bench._listeners SPEC``). A listener is what a speaker's relay does on the
wire (broadcast/audio/timed_stream.py): one GET on the mount, with the
device's own ``Authorization`` or none, then reading. Not done: decoding and
playing. Every listener of a worker shares one selector loop.

Each page's arrival is taken when the read that completes it returns, and
its granule says how much audio it carries, so a listener's gaps are
computed as it reads (``Gaps``) and only the summary goes back. The pages
are cut by their headers alone (``PageSplitter``: TCP brought them whole,
and the CRC in Python for 10,000 pages a second would cost more than
Icecast); the two Opus headers are parsed and checked in full
(protocol.ogg), for the stream's epoch.

A refused or failed attempt is tried again as the speaker's relay does
(``ANSWER_TIMEOUT_S`` to answer, then its backoff), for ``CONNECT_TIMEOUT_S``.
The worker says ``{"connected": ...}`` once every listener is in or has
given up, reads until ``stop`` on its standard input, then prints one
summary per listener and exits.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from plumbing.backoff import Backoff
from protocol.ogg import OPUS_RATE, OggError, PageReader, epoch_of, opus_pre_skip

CAPTURE = b"OggS"
HEADER_BYTES = 27  # up to the segment count; the lacing values follow
STALL_MS = (200.0, 1000.0)  # the stalls counted
CONNECT_TIMEOUT_S = 300.0  # retries stop after this
ANSWER_TIMEOUT_S = 10.0  # as the speaker's urlopen (broadcast/audio/decode.STALL_TIMEOUT_S)
RETRY_BASE_S, RETRY_CAP_S = 0.5, 10.0  # the speaker's relay backoff (broadcast/config.py)
READ_BYTES = 65536


class PageSplitter:
    """Ogg pages out of a byte stream fed in pieces, by their headers: (granule, page)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped = 0  # bytes that were no page (a stream joined mid-page, or damage)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            if not buf.startswith(CAPTURE):
                at = buf.find(CAPTURE)
                drop = at if at >= 0 else max(0, len(buf) - 3)
                self.skipped += drop
                del buf[:drop]
                if at < 0:
                    return out
            if len(buf) < HEADER_BYTES:
                return out
            head = HEADER_BYTES + buf[26]
            if len(buf) < head:
                return out
            end = head + sum(buf[HEADER_BYTES:head])
            if len(buf) < end:
                return out
            out.append((int.from_bytes(buf[6:14], "little", signed=True), bytes(buf[:end])))
            del buf[:end]


@dataclass
class Gaps:
    """A listener's stalls: time with no audio beyond what its pages' granules carry.

    It plays from its first audio page on; each page adds the samples since
    the page before (granule positions count 48 kHz samples), and the first
    is taken to carry as many as the second (a stream's pages are alike, 100
    ms). A page that comes after the audio held has run out is a stall of
    that wait, and play goes on from its arrival. So a listener ahead of real
    time (Icecast's burst on connecting) absorbs late pages up to its lead.
    """

    largest_ms: float = 0.0
    total_ms: float = 0.0
    counts: list[int] = field(default_factory=lambda: [0] * len(STALL_MS))
    audio_ms: float = 0.0  # the audio its pages carried
    _granule: int | None = None
    _first_at_ms: float | None = None  # the first page's arrival, until the second sizes it
    _until_ms: float = 0.0  # when the audio held so far runs out

    def page(self, at_ms: float, granule: int) -> None:
        if granule <= 0:  # the headers (0), or no packet ends on this page (-1)
            return
        if self._granule is None:
            self._granule, self._first_at_ms = granule, at_ms
            return
        if granule <= self._granule:
            return
        carried = (granule - self._granule) * 1000 / OPUS_RATE
        if self._first_at_ms is not None:
            self._until_ms, self._first_at_ms = self._first_at_ms + carried, None
            self.audio_ms = carried
        stall = at_ms - self._until_ms
        if stall > 0:
            self.largest_ms = max(self.largest_ms, stall)
            self.total_ms += stall
            for i, limit in enumerate(STALL_MS):
                self.counts[i] += stall > limit
            self._until_ms = at_ms
        self._until_ms += carried
        self.audio_ms += carried
        self._granule = granule


@dataclass
class Summary:
    """One listener's figures, as the worker sends them back."""

    status: int = 0  # the HTTP status; 0: no answer
    error: str = ""
    connect_ms: float = 0.0  # from the first connect() to the 200's status line
    attempts: int = 0  # a refused or failed one is tried again, as the speaker's relay does
    bytes: int = 0
    pages: int = 0
    head: bool = False  # OpusHead and OpusTags came, and parsed
    epoch_ms: int | None = None  # XASO_EPOCH_MS from OpusTags
    largest_stall_ms: float = 0.0
    stall_ms: float = 0.0
    stalls: list[int] = field(default_factory=list)  # over each of STALL_MS
    audio_ms: float = 0.0
    late: int = 0  # pages that came after the instant their first sample is heard
    min_margin_ms: float | None = None  # the least time a page came before that instant


class Listener:
    """One GET on the mount; its pages go to ``Gaps`` and, timed, to the epoch check."""

    def __init__(self, host: str, port: int, path: str, authorization: str | None) -> None:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: xaso-bench"]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        self.request = ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode()
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.summary = Summary()
        self.backoff = Backoff(RETRY_BASE_S, RETRY_CAP_S)
        self.retry_at: float | None = None  # monotonic; None: not waiting to retry
        self.answer_by = 0.0  # monotonic: no answer by then is a failed attempt
        self.gaps = Gaps()
        self.splitter = PageSplitter()
        self.answered = False
        self.done = False
        self._head = b""
        self._headers: list[bytes] = []  # OpusHead, OpusTags pages
        self._pre_skip = 0
        self._last = 0  # the granule of the page before
        self._t0 = 0.0

    def connect(self) -> None:
        if not self.summary.attempts:
            self._t0 = time.time() * 1000
        self.summary.attempts += 1
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex(self.address)
        self.answer_by = time.monotonic() + ANSWER_TIMEOUT_S
        self.retry_at = None

    def retry(self, why: str) -> None:
        """A failed attempt before the stream: close, and connect again after a backoff."""
        self.sock.close()
        self._head = b""
        self.summary.error = why  # the last one, until an attempt succeeds
        self.retry_at = time.monotonic() + self.backoff.next_delay()

    def writable(self) -> None:
        """Connected (or refused): send the request."""
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.retry(f"connect: errno {err}")
            return
        self.sock.send(self.request)  # a few hundred bytes into an empty buffer

    def readable(self) -> None:
        now_ms = time.time() * 1000
        try:
            data = self.sock.recv(READ_BYTES)
        except OSError as exc:
            self._lost(f"recv: {exc}")
            return
        if not data:
            self._lost("closed by the server")
            return
        self.summary.bytes += len(data)
        if not self.answered:
            self._head += data
            if b"\r\n\r\n" not in self._head:
                return
            head, _, data = self._head.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].split(b" ")
            self.summary.status = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
            self.summary.bytes -= len(head) + 4
            if self.summary.status != 200:
                line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.retry(f"answered {line}")
                return
            self.summary.connect_ms = now_ms - self._t0
            self.summary.error = ""
            self.answered = True
        for granule, raw in self.splitter.feed(data):
            self._page(now_ms, granule, raw)

    def _page(self, now_ms: float, granule: int, raw: bytes) -> None:
        s = self.summary
        s.pages += 1
        if len(self._headers) < 2:
            self._headers.append(raw)
            if len(self._headers) == 2:
                self._check_headers()
            return
        self.gaps.page(now_ms, granule)
        if s.epoch_ms is not None and granule > 0:
            if self._last > 0:  # its first sample is the one after the page before's last
                margin = s.epoch_ms + (self._last - self._pre_skip) * 1000 / OPUS_RATE - now_ms
                s.late += margin < 0
                s.min_margin_ms = (
                    margin if s.min_margin_ms is None else min(s.min_margin_ms, margin)
                )
            self._last = granule

    def _check_headers(self) -> None:
        try:
            head, tags = (PageReader().feed(raw) for raw in self._headers)
            if len(head) != 1 or len(tags) != 1 or not head[0].bos:
                raise OggError("the stream does not begin with two header pages")
            self._pre_skip = opus_pre_skip((head[0].packets() or [b""])[0])
            self.summary.epoch_ms = epoch_of((tags[0].packets() or [b""])[0])
            self.summary.head = True
        except OggError as exc:
            self.summary.error = f"headers: {exc}"

    def _lost(self, why: str) -> None:
        if self.answered:
            self.fail(why)
        else:
            self.retry(why)

    def fail(self, why: str) -> None:
        if not self.summary.error:
            self.summary.error = why
        self.done = True
        self.answered = True

    def finish(self) -> Summary:
        s, g = self.summary, self.gaps
        s.largest_stall_ms, s.stall_ms, s.stalls = g.largest_ms, g.total_ms, list(g.counts)
        s.audio_ms = g.audio_ms
        self.sock.close()
        return s


def run(spec: dict[str, Any]) -> None:
    """Connect every listener at once, report, read until told to stop, report each."""
    listeners = [
        Listener(spec["host"], spec["port"], spec["path"], auth) for auth in spec["authorization"]
    ]
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    for listener in listeners:
        listener.connect()
        sel.register(listener.sock, selectors.EVENT_WRITE, listener)
    reported = False
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        for key, mask in sel.select(timeout=0.1):
            listener = key.data
            if listener is None:
                sys.stdin.readline()  # "stop", or EOF: the bench is gone
                _say([asdict(one.finish()) for one in listeners])
                return
            sock = listener.sock
            if mask & selectors.EVENT_WRITE:
                listener.writable()
                if listener.retry_at is None:
                    sel.modify(sock, selectors.EVENT_READ, listener)
            else:
                listener.readable()
            if listener.done or listener.retry_at is not None:
                sel.unregister(sock)
        _timers(listeners, sel, deadline)
        if not reported and all(one.answered for one in listeners):
            ok = sum(one.summary.status == 200 and not one.done for one in listeners)
            _say({"connected": ok, "of": len(listeners)})
            reported = True


def _timers(listeners: list[Listener], sel: selectors.BaseSelector, deadline: float) -> None:
    """Attempts with no answer in time fail; retries whose backoff is over connect again."""
    now = time.monotonic()
    for one in listeners:
        if one.answered:
            continue
        if one.retry_at is None and now > one.answer_by:
            sel.unregister(one.sock)
            one.retry(f"no answer in {ANSWER_TIMEOUT_S:.0f} s")
        if one.retry_at is not None and now >= one.retry_at:
            if now > deadline:
                one.fail(one.summary.error)
                continue
            one.connect()
            sel.register(one.sock, selectors.EVENT_WRITE, one)


def _say(what: Any) -> None:
    sys.stdout.write(json.dumps(what) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as spec_file:
        run(json.load(spec_file))
