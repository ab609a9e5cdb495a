"""What the player plays: PCM chunks in real time from a clip or a live stream.

A source reads from ffmpeg a chunk at a time (broadcast.audio.decode) and
knows what is left of it when it is cut, so that a preempted clip or stream
resumes where it stopped, at the gain of the moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from broadcast.audio.decode import (
    PCM_ARGS,
    STALL_TIMEOUT_S,
    DecodeError,
    Decoder,
    DecoderPool,
    FfmpegPipe,
    bytes_to_ms,
    ms_to_bytes,
    volume_arg,
)
from plumbing.backoff import Backoff

log = logging.getLogger(__name__)


class PcmSource(Protocol):
    """What the player plays: PCM chunks in real time, and what is left of it if cut."""

    def start(self) -> None: ...
    def prefetch(self, ahead_ms: float, timeout_s: float) -> bool: ...
    def read(self, timeout_s: float) -> bytes | None: ...
    def remainder(self, gain_db: float) -> PcmSource: ...
    def close(self) -> None: ...


class ClipSource:
    """A clip played ``repeat`` times back to back, from ``start_ms`` into its first pass."""

    def __init__(
        self,
        path: Path,
        pool: DecoderPool,
        *,
        gain_db: float = 0.0,
        repeat: int = 1,
        start_ms: float = 0,
        chunk_ms: float = 20,
    ) -> None:
        self.path = path
        self._pool = pool
        self.gain_db = gain_db
        self.repeat = repeat
        self.start_ms = start_ms
        self._chunk = ms_to_bytes(chunk_ms)
        self._pass = 0
        self._pass_bytes = 0  # delivered from the current pass
        self._cur: Decoder | None = None
        self._next: Decoder | None = None
        self._silent_since: float | None = None

    def _decoder(self, start_ms: float) -> Decoder:
        decoder = self._pool.take()
        try:
            decoder.start(self.path, gain_db=self.gain_db, start_ms=start_ms)
        except DecodeError:
            decoder.close()
            raise
        return decoder

    def start(self) -> None:
        if self._cur is None and self._pass < self.repeat:
            self._cur = self._decoder(self.start_ms if self._pass == 0 else 0)

    def prefetch(self, ahead_ms: float, timeout_s: float) -> bool:
        """Decode ahead: True once ``ahead_ms`` are ready (or the clip is shorter)."""
        self.start()
        return self._cur is None or self._cur.fill(ms_to_bytes(ahead_ms), timeout_s)

    def read(self, timeout_s: float) -> bytes | None:
        while self._pass < self.repeat:
            self.start()
            assert self._cur is not None
            more = self._pass + 1 < self.repeat
            if more and self._next is None and self._cur.finished_decoding():
                self._next = self._decoder(0)  # the next pass starts before this one ends
            data = self._cur.read(self._chunk, timeout_s)
            if data is None:
                self._cur.close()
                self._cur, self._next = self._next, None
                self._pass += 1
                self._pass_bytes = 0
                continue
            self._check_stall(bool(data))
            self._pass_bytes += len(data)
            return data
        return None

    def _check_stall(self, got: bool) -> None:
        now = time.monotonic()
        if got:
            self._silent_since = None
        elif self._silent_since is None:
            self._silent_since = now
        elif now - self._silent_since > STALL_TIMEOUT_S:
            raise DecodeError(f"{self.path.name}: ffmpeg produced nothing for {STALL_TIMEOUT_S} s")

    def remainder(self, gain_db: float) -> ClipSource:
        offset = (self.start_ms if self._pass == 0 else 0) + bytes_to_ms(self._pass_bytes)
        return ClipSource(
            self.path,
            self._pool,
            gain_db=gain_db,
            repeat=max(1, self.repeat - self._pass),
            start_ms=offset,
            chunk_ms=bytes_to_ms(self._chunk),
        )

    def close(self) -> None:
        for decoder in (self._cur, self._next):
            if decoder is not None:
                decoder.close()
        self._cur = self._next = None


class StreamRelay:
    """A live stream relayed for ``duration_ms``, whatever drops happen on the way.

    A stream that ends (the server restarted, the 4G link went) makes ffmpeg
    exit, and the relay starts it again, with jittered backoff, for the time
    that is left, reporting each drop. Gaps are filled with silence and the
    jitter buffer is refilled after each one, so the relay keeps to the wall
    clock and ends on time.

    ffmpeg's ``-reconnect_streamed`` is left off on purpose: it hides drops
    from the proof of play, and it restarts its own backoff on every read, so
    a server that accepts and soon closes is asked again at once, forever
    (seen here: 15 requests in 0.24 s for one short response). A thousand
    loudspeakers must not do that to a province's radio server.
    """

    def __init__(
        self,
        url: str,
        duration_ms: float,
        *,
        gain_db: float = 0.0,
        on_fault: Callable[[str, str], None] = lambda reason, detail: None,
        ffmpeg: str = "ffmpeg",
        chunk_ms: float = 20,
        jitter_ms: float = 1000,
        max_failures: int = 8,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        self.duration_ms = duration_ms
        self.gain_db = gain_db
        self._on_fault = on_fault
        self._ffmpeg = ffmpeg
        self._chunk = ms_to_bytes(chunk_ms)
        self._jitter = ms_to_bytes(jitter_ms)
        self._max_failures = max_failures
        self._backoff = backoff or Backoff(0.25, 5.0)
        self._failures = 0  # consecutive connections that gave no audio
        self._ff: FfmpegPipe | None = None
        self._delivered = 0
        self._got_audio = False  # from the current connection
        self._heard = False  # from any connection
        self._last_error = ""
        self._retry_at = 0.0
        self._buffering = True

    @property
    def remaining_bytes(self) -> int:
        return max(0, ms_to_bytes(self.duration_ms) - self._delivered)

    def _args(self) -> list[str]:
        net = ["-rw_timeout", str(int(STALL_TIMEOUT_S * 1e6))]
        if self.url.startswith(("http://", "https://")):  # resumes a cut response with a length
            net += ["-reconnect", "1", "-reconnect_delay_max", "5"]
        # a little over what is left: the relay itself stops at the exact sample
        seconds = f"{bytes_to_ms(self.remaining_bytes) / 1000 + 0.5:.3f}"
        return [
            *net,
            "-i",
            self.url,
            "-t",
            seconds,
            "-af",
            f"volume={volume_arg(self.gain_db)}",
            *PCM_ARGS,
        ]

    def start(self) -> None:
        if self._ff is None and time.monotonic() >= self._retry_at:
            self._ff = FfmpegPipe(self._ffmpeg, self._args())
            self._got_audio = False
            self._buffering = True

    def prefetch(self, ahead_ms: float, timeout_s: float) -> bool:
        """Connect and fill the jitter buffer ahead of the start; True once done."""
        self.start()
        if self._ff is None:
            return False
        want = min(max(ms_to_bytes(ahead_ms), self._jitter), self.remaining_bytes)
        self._ff.fill(want, timeout_s)
        self._buffering = not (self._ff.buffered >= want or self._ff.eof)
        return not self._buffering

    def _dropped(self) -> None:
        assert self._ff is not None
        why = self._last_error = self._ff.failure() or "the stream ended"
        self._ff.close()
        self._ff = None
        if self._got_audio:
            self._failures = 0
            self._backoff.reset()
        self._failures += 1
        if self._failures > self._max_failures:
            raise DecodeError(f"{self.url}: no audio after {self._max_failures} attempts ({why})")
        delay = self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        log.warning("stream %s dropped (%s); again in %.2f s", self.url, why, delay)
        self._on_fault("stream_dropped", why)

    def read(self, timeout_s: float) -> bytes | None:
        want = min(self._chunk, self.remaining_bytes)
        if want == 0:
            if not self._heard:
                raise DecodeError(f"{self.url}: no audio in the whole relay ({self._last_error})")
            return None
        self.start()
        ff = self._ff
        if ff is not None:
            ff.fill(self._jitter if self._buffering else want, 0 if self._buffering else timeout_s)
            full = ff.buffered >= min(self._jitter, self.remaining_bytes)
            if self._buffering and (full or ff.eof):
                self._buffering = False
            if not self._buffering and ff.buffered:
                data = ff.take(want)
                self._got_audio = self._heard = True
                self._delivered += len(data)
                return data
            if ff.eof:
                self._dropped()
            elif not self._buffering:
                self._buffering = True  # ran dry: refill before playing on
        self._delivered += want
        return bytes(want)  # silence while connecting, reconnecting or buffering

    def remainder(self, gain_db: float) -> StreamRelay:
        return StreamRelay(
            self.url,
            bytes_to_ms(self.remaining_bytes),
            gain_db=gain_db,
            on_fault=self._on_fault,
            ffmpeg=self._ffmpeg,
            chunk_ms=bytes_to_ms(self._chunk),
            jitter_ms=bytes_to_ms(self._jitter),
            max_failures=self._max_failures,
        )

    def close(self) -> None:
        if self._ff is not None:
            self._ff.close()
            self._ff = None
