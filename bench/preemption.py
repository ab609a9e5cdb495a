"""Preemption latency: from an emergency's submit to its first sample, while a normal clip plays.

Each trial starts a normal clip (priority 2), waits until it plays plus a
random 100-400 ms (so the submit falls anywhere in a chunk), submits an
emergency (priority 9) and reads the emergency's first sample time from the
WavFileSink's log. Both clips are MP3, as the clip cache holds them. The
normal clip's rest resumes after the emergency, from where it was cut: the
gap from the emergency's last sample to the rest's first is timed too (a rest
starts part-way: mpg123 skips whole frames, then samples are dropped).

Four series, same run:
- the player as a speaker builds it: mpg123 started for each clip, no ffmpeg
  waiting (``spares=0`` with broadcast.audio.native_decoders);
- the player before that: one ffmpeg kept started and waiting (``spares=1``);
- the same player with every ffmpeg started cold (``spares=0``): what the
  waiting decoder bought;
- the baseline, the theoretical floor: a bare loop writing chunks of the same
  size into the same sink, which notices a flag between chunks and notes
  when its next chunk goes. No decoding, no player: only the chunk wait.

    .venv/bin/python -m bench.preemption --trials 100
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

from bench.start_accuracy import percentile
from broadcast.audio.decode import DecoderPool, ms_to_bytes
from broadcast.audio.native_decoders import NativeDecoders
from broadcast.audio.player import Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink, wall_ms
from protocol.events import Body, PlayRecord

CHUNK_MS = 20
TARGET_MS = 200.0


def tone(path: Path, freq_hz: int, seconds: float) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency={freq_hz}:sample_rate=48000:duration={seconds}", "-ac", "1", str(path)],
        check=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    return path


class Started:
    """Waits for play.started / play.finished of a key."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self._cond = threading.Condition()

    def __call__(self, body: Body) -> None:
        if not isinstance(body, PlayRecord):
            return  # an audio.fault
        with self._cond:
            self.seen.add((body.TYPE, body.key))
            self._cond.notify_all()

    def wait(self, event_type: str, key: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: (event_type, key) in self.seen, 10):
                raise SystemExit(f"no {event_type} for {key}")


def player_latencies(
    trials: int, work: Path, name: str, pool: DecoderPool, rng: random.Random
) -> tuple[list[float], list[float]]:
    """Submit to the emergency's first sample, and the emergency's end to the rest's start."""
    normal = tone(work / "normal.mp3", 440, 3.0)
    storm = tone(work / "storm.mp3", 1000, 0.15)
    sink = WavFileSink(work / name)
    events = Started()
    player = Player(sink, on_event=events, decoders=pool, chunk_ms=CHUNK_MS)
    time.sleep(0.5)  # let the first spare come up
    submitted = {}
    for i in range(trials):
        player.submit(PlayRequest(f"n{i}", "command", 2, 3000, clip_path=normal))
        events.wait("play.started", f"n{i}")
        time.sleep(rng.uniform(0.1, 0.4))
        submitted[f"e{i}"] = wall_ms()
        player.submit(PlayRequest(f"e{i}", "command", 9, 150, clip_path=storm))
        events.wait("play.finished", f"e{i}")
        events.wait("play.finished", f"n{i}")  # its rest, resumed
    player.close()
    played = sink.played()
    started = {e["key"]: e["started_ms"] for e in played}
    gaps = [
        rest["started_ms"] - cut["ended_ms"]
        for cut, rest in pairwise(played)
        if cut["key"].startswith("e") and rest["key"] == "n" + cut["key"][1:]
    ]
    return [started[key] - at for key, at in submitted.items()], gaps


def floor_latencies(trials: int, work: Path, rng: random.Random) -> list[float]:
    sink = WavFileSink(work / "floor")
    chunk = bytes(ms_to_bytes(CHUNK_MS))
    flag = threading.Event()
    noticed: list[float] = []
    done = threading.Event()

    def writer() -> None:
        sink.open(48000, 1, key="floor")
        while not done.is_set():
            if flag.is_set():
                flag.clear()
                noticed.append(wall_ms())
            sink.write(chunk)
        sink.close()

    thread = threading.Thread(target=writer)
    thread.start()
    raised = []
    for _ in range(trials):
        time.sleep(rng.uniform(0.05, 0.15))
        raised.append(wall_ms())
        flag.set()
        while flag.is_set():
            time.sleep(0.001)
    done.set()
    thread.join()
    return [n - r for n, r in zip(noticed, raised, strict=True)]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<44} n={len(values):<4} p50 {percentile(values, 50):7.2f}  "
        f"p99 {percentile(values, 99):7.2f}  max {max(values):7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"load average before: {os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="xaso-bench-preempt-") as tmp:
        work = Path(tmp)
        small = NativeDecoders.find()
        if small is None:
            raise SystemExit("needs mpg123 (apt install mpg123)")
        native, native_gaps = player_latencies(
            args.trials, work, "native", DecoderPool(spares=0, native=small.open), rng
        )
        warm, warm_gaps = player_latencies(args.trials, work, "warm", DecoderPool(spares=1), rng)
        cold, cold_gaps = player_latencies(args.trials, work, "cold", DecoderPool(spares=0), rng)
        floor = floor_latencies(args.trials, work, rng)
    print(f"\nsubmit -> emergency's first sample, {CHUNK_MS} ms chunks")
    print(summary("Player, mpg123 started for it (as built)", native))
    print(summary("Player, an ffmpeg started ahead (before)", warm))
    print(summary("Player, every ffmpeg started cold", cold))
    print(summary("baseline: bare chunk loop (the floor)", floor))
    print("\nthe emergency's last sample -> the cut clip's rest resuming")
    print(summary("Player, mpg123 (the rest part-way, too)", native_gaps))
    print(summary("Player, an ffmpeg started ahead", warm_gaps))
    print(summary("Player, every ffmpeg started cold", cold_gaps))
    p99 = percentile(native, 99)
    verdict = "meets" if p99 <= TARGET_MS else "MISSES"
    print(f"p99 {p99:.2f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
