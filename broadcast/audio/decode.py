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
one idle ffmpeg (about 47 MiB RSS, 38 MiB private here); ``DecoderPool(spares=0)``
does without it, and a speaker does when mpg123 and opusdec are there to take
its clips (broadcast.audio.native_decoders).
"""

from __future__ import annotations

import contextlib
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
from typing import IO

RATE = 48_000
CHANNELS = 1
FRAME_BYTES = 2 * CHANNELS  # s16le
PCM_ARGS = ["-map", "0:a:0", "-f", "s16le", "-ac", str(CHANNELS), "-ar", str(RATE), "pipe:1"]
STALL_TIMEOUT_S = 10.0  # ffmpeg silent this long while it should be producing: wedged
EXIT_TIMEOUT_S = 5.0
SAFE_PATH = re.compile(r"[\w/.-]+")  # needs no escaping inside an ffmpeg filter graph
# "[mp3 @ 0x55d0...] " (ffmpeg) or "[src/streamdump.c:stream_open():600] " (mpg123)
CONTEXT = re.compile(r"^\[(?:[^]]* @ 0x[0-9a-f]+|[\w/.]+:\w+\(\):\d+)\] ")


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


def volume_arg(gain_db: float) -> str:
    """A gain as the value of ffmpeg's ``volume`` filter."""
    return "0" if gain_db == -math.inf else f"{gain_db:.2f}dB"


class PcmPipe:
    """One decoder process writing PCM to a pipe, read with timeouts so the reader
    stays responsive. ``package`` names what to install when the program is missing."""

    def __init__(
        self, argv: list[str], *, feed: bool = False, package: str = "ffmpeg", discard: int = 0
    ) -> None:
        self.tool = os.path.basename(argv[0])
        self._discard = discard  # bytes of output thrown away first (a start part-way)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except FileNotFoundError as exc:
            self._stderr.close()
            raise DecodeError(f"{argv[0]!r} not found: install {package}") from exc
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
            data = os.read(self._fd, nbytes - len(self._buf) + self._discard)
            if data:
                self._buf += data
                if self._discard:
                    cut = min(self._discard, len(self._buf))
                    del self._buf[:cut]
                    self._discard -= cut
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
            return f"{self.tool} closed its output but did not exit"
        if code == 0:
            return None
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        lines = [CONTEXT.sub("", line) for line in text.splitlines() if line.strip()]
        return "; ".join(lines[-3:]) or f"{self.tool} exited with status {code}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(EXIT_TIMEOUT_S)
        for f in (self.proc.stdin, self.proc.stdout, self._stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


class FfmpegPipe(PcmPipe):
    """ffmpeg with ``args``, quiet but for errors."""

    def __init__(self, ffmpeg: str, args: list[str], *, feed: bool = False) -> None:
        argv = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *args]
        super().__init__(argv, feed=feed)


class PipeDecoder:
    """One pass of one clip through a decoder process's pipe."""

    def __init__(self, pipe: PcmPipe, path: Path | None = None) -> None:
        self._ff = pipe
        self.path = path

    def finished_decoding(self) -> bool:
        """The decoder has exited: what is left is in the pipe, time to start whatever
        comes next."""
        return self._ff.exited()

    def _fill(self, nbytes: int, timeout_s: float) -> None:
        self._ff.fill(nbytes, timeout_s)

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


class Decoder(PipeDecoder):
    """An ffmpeg started ahead, before its clip is known."""

    def __init__(self, ffmpeg: str = "ffmpeg") -> None:
        # named now, written by start(), gone once ffmpeg has read it: a spare leaves no file
        name = os.path.join(tempfile.gettempdir(), f"xaso-gain-{secrets.token_hex(8)}.cmd")
        if not SAFE_PATH.fullmatch(name):
            raise DecodeError(f"temp dir {name!r} has characters ffmpeg filters cannot take")
        self._gain_file = Path(name)
        args = ["-protocol_whitelist", "pipe,file", "-f", "concat", "-safe", "0", "-i", "pipe:0"]
        args += ["-af", f"asendcmd=f={name},volume@gain=1", *PCM_ARGS]
        super().__init__(FfmpegPipe(ffmpeg, args, feed=True))

    def alive(self) -> bool:
        return self.path is not None or not self._ff.exited()

    def start(self, path: Path, *, gain_db: float = 0.0, start_ms: float = 0) -> None:
        """Name the clip: audio starts flowing within milliseconds."""
        self.path = path
        self._gain_file.write_text(f"0 volume@gain volume {volume_arg(gain_db)};\n")
        quoted = str(path.resolve()).replace("'", "'\\''")
        script = f"ffconcat version 1.0\nfile 'file:{quoted}'\n"
        if start_ms > 0:
            script += f"inpoint {start_ms / 1000:.3f}\n"
        try:
            self._ff.stdin.write(script.encode())
            self._ff.stdin.close()
        except BrokenPipeError as exc:
            raise DecodeError(f"{path.name}: the decoder died before it was used") from exc

    def _fill(self, nbytes: int, timeout_s: float) -> None:
        self._ff.fill(nbytes, timeout_s)
        if self._ff.buffered or self._ff.eof:  # audio out: the filter graph has read the gain
            self._gain_file.unlink(missing_ok=True)

    def close(self) -> None:
        self._ff.close()
        self._gain_file.unlink(missing_ok=True)


# A decoder that needs no spare (broadcast.audio.native_decoders), or None: not for this clip.
NativeOpener = Callable[[Path, float, float], PipeDecoder | None]


class DecoderPool:
    """Keeps ``spares`` decoders started and waiting; with 0, each one starts cold.

    ``warm()`` starts them before anything is asked, at the agent's start: a
    decoder started on demand takes hundreds of ms to its first sample (more
    on a Pi just after boot), which made the first play after each start late
    (docs/benchmarks.md, "First play after start"). A waiting ffmpeg holds
    more memory than the agent itself, so with ``keep_s`` the spares go once
    nothing has been asked of the pool for that long (``release_idle``), and
    the player warms them again as soon as something is queued: a scheduled
    item is queued seconds ahead, an emergency has its lead.

    ``native`` opens the clips a small decoder can take (MP3 and Opus from the
    start, broadcast.audio.native_decoders), which start in milliseconds: with
    it, a speaker keeps no spare (``spares=0``) and ffmpeg starts on demand for
    the rest.
    """

    def __init__(
        self,
        ffmpeg: str = "ffmpeg",
        spares: int = 1,
        *,
        keep_s: float | None = None,
        native: NativeOpener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ffmpeg = ffmpeg
        self._native = native
        self.spares = spares
        self.keep_s = keep_s
        self._clock = clock
        self._ready: list[Decoder] = []
        self._lock = threading.Lock()
        self._closed = False
        self._used_s = clock()
        # decoders handed out: an ffmpeg that was waiting ("warm") or started on demand
        # ("cold"), or a small decoder started on demand ("native")
        self.taken = {"warm": 0, "cold": 0, "native": 0}
        self.released = 0  # spares let go after keep_s idle

    @property
    def waiting(self) -> int:
        """Spares started and waiting now."""
        with self._lock:
            return len(self._ready)

    def warm(self) -> None:
        """Start the spares now, not at the first play."""
        with self._lock:
            self._used_s = self._clock()
            self._top_up()

    def release_idle(self) -> float | None:
        """Let the spares go if the pool has been idle ``keep_s``; otherwise the seconds
        until it will have been (None: nothing to let go, or spares kept for good)."""
        with self._lock:
            if self.keep_s is None or not self._ready:
                return None
            left = self._used_s + self.keep_s - self._clock()
            if left > 0:
                return left
            for decoder in self._ready:
                decoder.close()
                self.released += 1
            self._ready.clear()
            return None

    def open(self, path: Path, *, gain_db: float = 0.0, start_ms: float = 0) -> PipeDecoder:
        """A decoder of ``path``, started: a native one if it takes the clip, else ffmpeg."""
        if self._native is not None:
            native = self._native(path, gain_db, start_ms)
            if native is not None:
                with self._lock:
                    self._used_s = self._clock()
                    self.taken["native"] += 1
                return native
        decoder = self.take()
        try:
            decoder.start(path, gain_db=gain_db, start_ms=start_ms)
        except DecodeError:
            decoder.close()
            raise
        return decoder

    def take(self) -> Decoder:
        """An ffmpeg waiting for its clip (``Decoder.start``)."""
        with self._lock:
            self._used_s = self._clock()
            while self._ready:
                decoder = self._ready.pop(0)
                if decoder.alive():
                    self.taken["warm"] += 1
                    break
                decoder.close()
            else:
                decoder = Decoder(self.ffmpeg)
                self.taken["cold"] += 1
            self._top_up()
            return decoder

    def _top_up(self) -> None:
        while len(self._ready) < self.spares and not self._closed:
            self._ready.append(Decoder(self.ffmpeg))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for decoder in self._ready:
                decoder.close()
            self._ready.clear()
