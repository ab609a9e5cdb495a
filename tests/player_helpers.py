"""The player's test rig: tones made by ffmpeg, a Player on the WAV-file sink, its events.

Shared by tests/test_player.py and tests/test_preemption.py; their fixtures
(``clips``, ``rig``) are in tests/conftest.py.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from broadcast.audio.player import Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink
from protocol.events import Body

Clips = dict[str, Path]
LENGTH_TOLERANCE_S = 0.03


# audio in and out


def tone(path: Path, freq_hz: float, seconds: float, dbfs: float = -12.0) -> Path:
    """A sine of the given RMS level, encoded by the file's extension."""
    amplitude = 10 ** (dbfs / 20) * math.sqrt(2)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"aevalsrc={amplitude:.6f}*sin(2*PI*{freq_hz}*t):s=48000:d={seconds}",
         "-ac", "1", str(path)],
        check=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    return path


def samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)


def dominant_hz(x: np.ndarray, rate: int = 48000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def rms_dbfs(x: np.ndarray) -> float:
    return float(20 * math.log10(max(np.sqrt(np.mean(x**2)), 1e-9) / 32768))


# a player wired to a WAV-file sink, with its events collected


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, body: Body) -> None:
        with self._cond:
            self.items.append((body.TYPE, body.wire()))  # as it goes on the wire
            self._cond.notify_all()

    def of(self, event_type: str, key: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [b for t, b in self.items if t == event_type and key in (None, b.get("key"))]

    def wait(
        self, event_type: str, key: str | None = None, count: int = 1, timeout_s: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.of(event_type, key)) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"no {event_type} for {key}: {self.items}"
                self._cond.wait(left)
            return self.of(event_type, key)[count - 1]

    def ended(self, key: str, timeout_s: float = 30) -> tuple[str, dict[str, Any]]:
        """The record that ends ``key``'s request: play.finished or play.missed."""
        ends = ("play.finished", "play.missed")
        with self._cond:
            found = self._cond.wait_for(
                lambda: any(self.of(t, key) for t in ends), timeout=timeout_s
            )
            assert found, f"no end for {key}: {self.items}"
            return next((t, self.of(t, key)[0]) for t in ends if self.of(t, key))


class Rig:
    def __init__(self, tmp: Path, **player_kw: Any) -> None:
        self.sink = WavFileSink(tmp / "played")
        self.events = Events()
        self.player = Player(self.sink, on_event=self.events, **player_kw)

    def recordings(self, key: str) -> list[tuple[dict[str, Any], np.ndarray]]:
        return [
            (e, samples(self.sink.dir / e["file"])) for e in self.sink.played() if e["key"] == key
        ]

    def recording(self, key: str) -> tuple[dict[str, Any], np.ndarray]:
        (only,) = self.recordings(key)
        return only


def ffmpeg_children(pid: int | None = None) -> int:
    """The ffmpeg processes under ``pid`` (default: this one), however deep."""
    kids = psutil.Process(pid).children(recursive=True)
    return sum(1 for p in kids if p.name() == "ffmpeg")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def req(key: str, clip: Path, priority: int = 2, **kw: Any) -> PlayRequest:
    return PlayRequest(key, "command", priority, 1000, clip_path=clip, **kw)


def assert_tone(x: np.ndarray, freq_hz: float, seconds: float | None = None) -> None:
    assert abs(dominant_hz(x) - freq_hz) < 5
    if seconds is not None:
        assert abs(len(x) / 48000 - seconds) < LENGTH_TOLERANCE_S
