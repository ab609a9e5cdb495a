"""Where PCM goes: the Pi's sound card through aplay, or WAV files that record what played when.

A sink is opened once per playback session (one request, or what is left of
one after a preemption) and written in small chunks; a write blocks for about
as long as its audio lasts, which is what paces the player in real time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

WRITE_TIMEOUT_S = 2.0  # a device that takes no audio for this long is stuck
PIPE_BYTES = 4096  # the smallest pipe: ~40 ms of audio queued in front of aplay


def wall_ms() -> float:
    return time.time_ns() / 1e6


class SinkError(Exception):
    """The sound device refused or failed; ``reason`` goes into the ``audio.fault`` event."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Sink(Protocol):
    latency_ms: float  # from handing a sample to the sink to hearing it
    # paced by a sound card's crystal, not the wall clock: the player measures its drift
    # (broadcast/audio/sink_clock.py) to keep a stream on its timeline
    card_clock: bool

    def open(self, rate: int, channels: int, *, key: str = "", label: str = "") -> None:
        """Get the device ready (may take a while: the player does it ahead of the start)."""

    def write(self, pcm: bytes) -> None:
        """Hand over s16le PCM; blocks while the device is full."""

    def close(self, *, drain: bool = True) -> None:
        """End the session: let the queued audio play out, or drop it (a preemption)."""


class WavFileSink:
    """A fake sound card: paced like one, and keeping a WAV and a log line per session.

    ``played.jsonl`` gets one line per session: the file, ``started_ms`` (wall
    clock when the first sample was handed over), ``samples``, ``rate``, and the
    request's ``key`` and ``label``. Sessions in which nothing was written leave
    nothing behind.
    """

    latency_ms = 0.0

    def __init__(
        self, directory: Path, clock: Callable[[], float] = wall_ms, *, drift_ppm: float = 0.0
    ) -> None:
        """``drift_ppm``: paced like a card whose crystal runs that much slow (negative:
        fast), which the player measures as a card's; its log lines say so. 0: its
        timeline is exact."""
        self.dir = directory
        self.drift_ppm = drift_ppm
        self.card_clock = drift_ppm != 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "played.jsonl"
        self._clock = clock
        self._count = sum(1 for _ in directory.glob("*.wav"))
        self._wav: wave.Wave_write | None = None
        self._session: dict[str, Any] = {}
        self._t0 = 0.0

    def open(self, rate: int, channels: int, *, key: str = "", label: str = "") -> None:
        if self._wav is not None:
            self.close()
        self._count += 1
        safe = re.sub(r"[^\w.-]+", "_", key)[:60]
        path = self.dir / f"{self._count:04d}-{safe}.wav"
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._session = {
            "file": path.name,
            "started_ms": None,
            "samples": 0,
            "rate": rate,
            "channels": channels,
            "key": key,
            "label": label,
        }
        if self.drift_ppm:
            self._session["drift_ppm"] = self.drift_ppm

    def write(self, pcm: bytes) -> None:
        if self._wav is None:
            raise SinkError("not_open", "write before open")
        session = self._session
        if session["started_ms"] is None:
            session["started_ms"] = round(self._clock(), 3)
            self._t0 = time.monotonic()
        self._wav.writeframes(pcm)
        session["samples"] += len(pcm) // (2 * session["channels"])
        # like a card's clock: each write returns when its audio has played, with no drift
        deadline = self._t0 + session["samples"] / (session["rate"] * (1 - self.drift_ppm / 1e6))
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def close(self, *, drain: bool = True) -> None:
        if self._wav is None:
            return
        self._wav.close()
        self._wav = None
        session = self._session
        if not session["samples"]:
            (self.dir / session["file"]).unlink(missing_ok=True)
            return
        session["ended_ms"] = round(self._clock(), 3)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(session, ensure_ascii=False) + "\n")

    def played(self) -> list[dict[str, Any]]:
        """Every session recorded so far, oldest first."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text("utf-8").splitlines()]


class AlsaSink:
    """PCM piped to ``aplay``: the lowest layer that still works on every Pi image.

    The pipe to aplay is shrunk to one page so little audio queues in front of
    the card, and a preempted session is killed rather than drained. A card
    already held by another process (EBUSY) fails the session with reason
    ``device_busy``; the player reports it and tries again (PITFALLS, "Audio on
    the Pi"). ``latency_ms`` is the board's output delay, measured with a
    loopback cable; the player writes that much before the planned instant.
    """

    card_clock = True

    def __init__(
        self,
        device: str = "default",
        *,
        aplay: str = "aplay",
        buffer_ms: int = 100,
        latency_ms: float = 0.0,
    ) -> None:
        self.device = device
        self.aplay = aplay
        self.buffer_ms = buffer_ms
        self.latency_ms = latency_ms
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def command(self, rate: int, channels: int) -> list[str]:
        return [
            self.aplay,
            "-q",
            "-D",
            self.device,
            "-t",
            "raw",
            "-f",
            "S16_LE",
            "-r",
            str(rate),
            "-c",
            str(channels),
            "-B",
            str(self.buffer_ms * 1000),
        ]

    def open(self, rate: int, channels: int, *, key: str = "", label: str = "") -> None:
        if self._proc is not None:
            self.close(drain=False)
        argv = self.command(rate, channels)
        if shutil.which(argv[0]) is None:
            raise SinkError("no_player", f"{argv[0]!r} not found: install alsa-utils")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        assert self._proc.stdin is not None
        fd = self._proc.stdin.fileno()
        with contextlib.suppress(OSError):  # Linux only; a bigger pipe only adds latency
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(fd, False)

    def write(self, pcm: bytes) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise SinkError("not_open", "write before open")
        fd = self._proc.stdin.fileno()
        view = memoryview(pcm)
        while view:
            _, ready, _ = select.select([], [fd], [], WRITE_TIMEOUT_S)
            if not ready:
                raise self._failed(f"the device took no audio for {WRITE_TIMEOUT_S} s")
            try:
                view = view[os.write(fd, view) :]
            except BrokenPipeError:
                raise self._failed("aplay exited") from None

    def _failed(self, fallback: str) -> SinkError:
        """Why aplay stopped, from what it printed; the session is over either way."""
        stderr, self._stderr = self._stderr, None
        with contextlib.suppress(SinkError):
            self.close(drain=False)
        text = ""
        if stderr is not None:
            stderr.seek(0)
            text = stderr.read().decode(errors="replace").strip()
            stderr.close()
        detail = text.splitlines()[-1] if text else fallback
        reason = "device_busy" if "busy" in text.lower() else "device_failed"
        return SinkError(reason, detail)

    def close(self, *, drain: bool = True) -> None:
        proc = self._proc
        if proc is None:
            return
        if not drain:
            proc.kill()
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            code = proc.wait(self.buffer_ms / 1000 + WRITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if drain and code != 0:
            raise self._failed(f"aplay exited with status {code}")
        self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
