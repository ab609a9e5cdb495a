"""Clips and live streams to raw PCM (s16le, mono, 48 kHz) through ffmpeg, streamed.

Decoded audio never piles up in Python: ffmpeg writes into a pipe, the player
reads it a chunk at a time as the sound card consumes it, and the pipe's
back-pressure keeps ffmpeg only a little ahead (PITFALLS, "pydub and ffmpeg").
Gain is ffmpeg's ``volume`` filter, so Python touches no samples.

Starting ffmpeg costs about 100 ms here and more on a Pi (Debian's build
loads some 200 shared libraries), which alone would eat most of the 200 ms an
emergency has to cut in. So a clip decoder is started *before* its clip is
known: it waits on its stdin for a concat script naming the file, and reads
its gain from a command file when its filter graph comes up, which ffmpeg does
only once the first frame is decoded, after the file is named. The price is
one idle ffmpeg (about 37 MiB of private memory here); ``DecoderPool(spares=0)``
does without it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from plumbing.backoff import Backoff

log = logging.getLogger(__name__)

RATE = 48_000
CHANNELS = 1
FRAME_BYTES = 2 * CHANNELS  # s16le
PCM_ARGS = ["-map", "0:a:0", "-f", "s16le", "-ac", str(CHANNELS), "-ar", str(RATE), "pipe:1"]
STALL_TIMEOUT_S = 10.0  # ffmpeg silent this long while it should be producing: wedged
EXIT_TIMEOUT_S = 5.0
SAFE_PATH = re.compile(r"[\w/.-]+")  # needs no escaping inside an ffmpeg filter graph
CONTEXT = re.compile(r"^\[[^]]* @ 0x[0-9a-f]+\] ")  # "[mp3 @ 0x55d0...] " before a message


class DecodeError(Exception):
    """ffmpeg could not turn the clip or stream into audio; the message says why."""


def ms_to_bytes(ms: float) -> int:
    return int(RATE * ms / 1000) * FRAME_BYTES


def bytes_to_ms(n: int) -> float:
    return n / FRAME_BYTES * 1000 / RATE


def volume_db(pct: int) -> float:
    """Device volume as an attenuation: 100 % is 0 dB, 50 % about -6 dB, 0 % silence."""
    if not 0 <= pct <= 100:
        raise ValueError("volume is 0-100 %")
    return 20 * math.log10(pct / 100) if pct else -math.inf


def _volume(gain_db: float) -> str:
    return "0" if gain_db == -math.inf else f"{gain_db:.2f}dB"


class _Ffmpeg:
    """One ffmpeg writing PCM to a pipe, read with timeouts so the reader stays responsive."""

    def __init__(self, ffmpeg: str, args: list[str], *, feed: bool = False) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *args],
                stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except FileNotFoundError as exc:
            self._stderr.close()
            raise DecodeError(f"{ffmpeg!r} not found: install ffmpeg") from exc
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = bytearray()
        self.eof = False

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def fill(self, nbytes: int, timeout_s: float) -> None:
        """Read until ``nbytes`` are buffered, the output ends, or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while len(self._buf) < nbytes and not self.eof:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return
            data = os.read(self._fd, nbytes - len(self._buf))
            if data:
                self._buf += data
            else:
                self.eof = True

    def take(self, nbytes: int) -> bytes:
        n = min(nbytes, len(self._buf))
        n -= n % FRAME_BYTES
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def failure(self) -> str | None:
        """Once the output has ended: None if ffmpeg succeeded, else what it said."""
        try:
            code = self.proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "ffmpeg closed its output but did not exit"
        if code == 0:
            return None
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        lines = [CONTEXT.sub("", line) for line in text.splitlines() if line.strip()]
        return "; ".join(lines[-3:]) or f"ffmpeg exited with status {code}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(EXIT_TIMEOUT_S)
        for f in (self.proc.stdin, self.proc.stdout, self._stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


class Decoder:
    """One pass of one clip; its ffmpeg is started ahead, before the clip is known."""

    def __init__(self, ffmpeg: str = "ffmpeg") -> None:
        # named now, written by start(), gone once ffmpeg has read it: a spare leaves no file
        name = os.path.join(tempfile.gettempdir(), f"xaso-gain-{secrets.token_hex(8)}.cmd")
        if not SAFE_PATH.fullmatch(name):
            raise DecodeError(f"temp dir {name!r} has characters ffmpeg filters cannot take")
        self._gain_file = Path(name)
        args = ["-protocol_whitelist", "pipe,file", "-f", "concat", "-safe", "0", "-i", "pipe:0"]
        args += ["-af", f"asendcmd=f={name},volume@gain=1", *PCM_ARGS]
        self._ff = _Ffmpeg(ffmpeg, args, feed=True)
        self.path: Path | None = None

    def alive(self) -> bool:
        return self.path is not None or not self._ff.exited()

    def start(self, path: Path, *, gain_db: float = 0.0, start_ms: float = 0) -> None:
        """Name the clip: audio starts flowing within milliseconds."""
        self.path = path
        self._gain_file.write_text(f"0 volume@gain volume {_volume(gain_db)};\n")
        quoted = str(path.resolve()).replace("'", "'\\''")
        script = f"ffconcat version 1.0\nfile 'file:{quoted}'\n"
        if start_ms > 0:
            script += f"inpoint {start_ms / 1000:.3f}\n"
        try:
            self._ff.stdin.write(script.encode())
            self._ff.stdin.close()
        except BrokenPipeError as exc:
            raise DecodeError(f"{path.name}: the decoder died before it was used") from exc

    def finished_decoding(self) -> bool:
        """ffmpeg has exited: what is left is in the pipe, time to start whatever comes next."""
        return self._ff.exited()

    def _fill(self, nbytes: int, timeout_s: float) -> None:
        self._ff.fill(nbytes, timeout_s)
        if self._ff.buffered or self._ff.eof:  # audio out: the filter graph has read the gain
            self._gain_file.unlink(missing_ok=True)

    def fill(self, nbytes: int, timeout_s: float) -> bool:
        """Decode ahead; True once ``nbytes`` are ready or the clip has ended."""
        self._fill(nbytes, timeout_s)
        if self._ff.buffered >= nbytes:
            return True
        if self._ff.eof:
            self._check()
        return self._ff.eof

    def read(self, nbytes: int, timeout_s: float) -> bytes | None:
        """Up to ``nbytes`` of PCM; b"" if none came in time; None once the clip has ended."""
        self._fill(nbytes, timeout_s)
        if self._ff.buffered >= FRAME_BYTES or not self._ff.eof:
            return self._ff.take(nbytes)
        self._check()
        return None

    def _check(self) -> None:
        failure = self._ff.failure()
        if failure is not None:
            name = self.path.name if self.path else "clip"
            raise DecodeError(f"{name}: {failure}")

    def close(self) -> None:
        self._ff.close()
        self._gain_file.unlink(missing_ok=True)


class DecoderPool:
    """Keeps ``spares`` decoders started and waiting; with 0, each one starts cold."""

    def __init__(self, ffmpeg: str = "ffmpeg", spares: int = 1) -> None:
        self.ffmpeg = ffmpeg
        self.spares = spares
        self._ready: list[Decoder] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> Decoder:
        with self._lock:
            while self._ready:
                decoder = self._ready.pop(0)
                if decoder.alive():
                    break
                decoder.close()
            else:
                decoder = Decoder(self.ffmpeg)
            while len(self._ready) < self.spares and not self._closed:
                self._ready.append(Decoder(self.ffmpeg))
            return decoder

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for decoder in self._ready:
                decoder.close()
            self._ready.clear()


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
        self._ff: _Ffmpeg | None = None
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
            f"volume={_volume(self.gain_db)}",
            *PCM_ARGS,
        ]

    def start(self) -> None:
        if self._ff is None and time.monotonic() >= self._retry_at:
            self._ff = _Ffmpeg(self._ffmpeg, self._args())
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
