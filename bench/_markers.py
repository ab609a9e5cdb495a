"""The mouth-to-speaker bench's markers: tone bursts found again, browser and speakers alike.

The fake microphone's file (``write_wav``) holds one cycle: every ``PERIOD_S``
a burst of ``BURST_S`` at one of ``FREQS_HZ`` in turn, silence between.
Chromium loops it from wherever it starts, so a burst's pitch names its slot
in the cycle, and a speaker's burst is the browser's of the same slot less
than a cycle earlier (``pair``).

``onsets`` reads any recording: the browser's own capture and each speaker's
sink go through the same function, so what it does to a burst's start (the
threshold, Opus smearing the attack by a millisecond or so) is nearly the
same on both sides and cancels in their difference. An onset is where the
short-term RMS first reaches a quarter of the recording's burst level, after
a stretch of quiet, in a burst that lasts its full length: a burst cut by a
speaker joining mid-way, or by a gap, is not a marker.

``FrameClock`` turns the browser's audio frames into wall instants from
ping-pongs with its AudioWorklet: each pong says which frame the audio
thread had reached between the ping's two wall instants.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 48_000
PERIOD_S = 1.5
FREQS_HZ = (500, 650, 800, 950, 1100, 1250, 1400, 1550)
CYCLE_MS = PERIOD_S * len(FREQS_HZ) * 1000
BURST_S = 0.12
EDGE_S = 0.002  # raised-cosine attack and release: a sharp onset, no click
AMPLITUDE = 0.5
RMS_S = 0.002  # the envelope's window
QUIET_S = (0.1, 0.03)  # before an onset, from 100 to 30 ms: below QUIET of the level
THRESHOLD, QUIET = 0.25, 0.05  # of the recording's burst level
HELD_S = (0.09, 0.15)  # how long a whole burst stays above the threshold
PITCH_TOLERANCE_HZ = 50.0


@dataclass(frozen=True)
class Marker:
    """A burst's onset: its wall instant (ms) and its slot in the cycle (index in FREQS_HZ)."""

    at_ms: float
    slot: int


def cycle(rate: int = RATE) -> np.ndarray:
    """One cycle of the marker file, floats in [-1, 1]."""
    period, burst, edge = round(PERIOD_S * rate), round(BURST_S * rate), round(EDGE_S * rate)
    t = np.arange(burst) / rate
    shape = np.ones(burst)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
    shape[:edge], shape[-edge:] = ramp, ramp[::-1]
    out = np.zeros(period * len(FREQS_HZ))
    for k, f in enumerate(FREQS_HZ):
        out[k * period : k * period + burst] = AMPLITUDE * shape * np.sin(2 * np.pi * f * t)
    return out


def write_wav(path: Path, rate: int = RATE) -> Path:
    """The cycle as 16-bit mono PCM, what Chromium's fake capture reads."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((cycle(rate) * 32767).astype("<i2").tobytes())
    return path


def _pitch_hz(x: np.ndarray, rate: int) -> float:
    """The strongest frequency, to a fraction of a bin (Hann window, parabolic peak)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    left, mid, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    return float((peak + 0.5 * (left - right) / (left - 2 * mid + right)) * rate / len(x))


def onsets(x: np.ndarray, rate: int) -> list[tuple[float, int]]:
    """Each whole burst in ``x``: its onset (a fractional sample index) and its slot."""
    win = max(1, round(RMS_S * rate))
    if len(x) < 2 * rate:
        return []
    sums = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    env = np.sqrt(np.maximum(sums[win:] - sums[:-win], 0.0) / win)  # env[i]: x[i : i + win]
    level = float(np.percentile(env, 99))
    if level < 1e-4:
        return []
    above = env >= THRESHOLD * level
    rises = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    falls = np.flatnonzero(~above[1:] & above[:-1]) + 1
    quiet_from, quiet_to = round(QUIET_S[0] * rate), round(QUIET_S[1] * rate)
    found = []
    for r in rises:
        after = falls[falls > r]
        if r < quiet_from or not len(after):
            continue
        held = (after[0] - r) / rate
        if not HELD_S[0] <= held <= HELD_S[1]:
            continue
        if env[r - quiet_from : r - quiet_to].max() >= QUIET * level:
            continue
        a, b = env[r - 1], env[r]
        crossing = r - 1 + (THRESHOLD * level - a) / (b - a) + win / 2  # the window's middle
        body = x[r + round(0.015 * rate) : r + round(0.105 * rate)]
        pitch = _pitch_hz(body, rate)
        slot = min(range(len(FREQS_HZ)), key=lambda k: abs(FREQS_HZ[k] - pitch))
        if abs(FREQS_HZ[slot] - pitch) <= PITCH_TOLERANCE_HZ:
            found.append((float(crossing), slot))
    return found


def markers(x: np.ndarray, rate: int, first_ms: float) -> list[Marker]:
    """The bursts of a recording whose first sample is at wall instant ``first_ms``."""
    return [Marker(first_ms + i * 1000 / rate, slot) for i, slot in onsets(x, rate)]


def pair(
    browser: Sequence[Marker], speaker: Sequence[Marker], early_ms: float = 500
) -> list[tuple[Marker, Marker]]:
    """Each speaker marker with the browser's of its slot, the latest no more than
    ``early_ms`` after it and less than a cycle before; each browser marker once."""
    out, used = [], set()
    for s in speaker:
        lags = [
            (s.at_ms - b.at_ms, i)
            for i, b in enumerate(browser)
            if b.slot == s.slot and i not in used and -early_ms < s.at_ms - b.at_ms < CYCLE_MS
        ]
        if lags:
            _, i = min(lags)
            used.add(i)
            out.append((browser[i], s))
    return out


def expected(browser: Sequence[Marker], lo_ms: float, hi_ms: float, shift_ms: float) -> int:
    """How many browser markers a speaker should hold: those that, ``shift_ms`` later,
    fall with their whole burst in its recording's span ``lo_ms`` to ``hi_ms``."""
    end = BURST_S * 1000 + 50  # the burst, and the quiet the next onset needs before it
    return sum(lo_ms + 100 <= b.at_ms + shift_ms <= hi_ms - end for b in browser)


class FrameClock:
    """The browser audio thread's frames on the wall clock, from ping-pongs with it.

    A ping sent at ``sent_ms`` was answered at ``got_ms`` with ``frame``, the
    frame the audio thread had reached: it was rendered no later than
    ``got_ms``, so ``got_ms - frame / rate`` is never below the true offset,
    and the least of it over the pings near a frame is the estimate (the
    thread renders in bursts, so a pong landing just after one comes close).
    """

    def __init__(self, pings: Sequence[tuple[float, float, float]], rate: float) -> None:
        if not pings:
            raise ValueError("no ping came back from the browser's audio thread")
        p = np.array(pings, dtype=np.float64)
        self.rate = rate
        self._frames = p[:, 2]
        self._offsets = p[:, 1] - p[:, 2] * 1000 / rate
        self.rtt_ms = p[:, 1] - p[:, 0]

    def wall_ms(self, frame: float, reach_s: float = 5.0) -> float:
        near = np.abs(self._frames - frame) <= reach_s * self.rate
        offsets = self._offsets[near] if near.any() else self._offsets
        return float(offsets.min() + frame * 1000 / self.rate)

    def spread_ms(self) -> float:
        """The median ping's offset above the least: how coarse the audio thread's steps are."""
        return float(np.median(self._offsets) - self._offsets.min())


def assemble(chunks: Sequence[tuple[int, np.ndarray]]) -> tuple[int, np.ndarray]:
    """The browser's captured chunks (first frame, samples) as one recording from its
    first frame, silence where the audio thread had no input."""
    if not chunks:
        return 0, np.zeros(0)
    first = min(f for f, _ in chunks)
    end = max(f + len(s) for f, s in chunks)
    out = np.zeros(end - first)
    for f, s in chunks:
        out[f - first : f - first + len(s)] = s
    return first, out
