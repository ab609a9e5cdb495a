"""The first play after a start: how late its first sample is, cold against warm.

Each trial is a fresh process, as an agent after a restart: it builds a Player
on a WavFileSink, waits ``--settle-s`` (the agent connecting, its first
telemetry), then takes a play-now request, the way a ``broadcast.play``
without ``at`` comes, and a second one once the first has ended. It prints
the lateness of each (actual first sample - planned, where planned is when
the request came) and which decoders it used. The clip is MP3, as prepared
clips are. The three kinds alternate in the same run:

- **native**: the player as a speaker builds it when mpg123 is installed: no
  ffmpeg waits, and each play starts an mpg123 (broadcast.audio.native_decoders);
- **warm**: the player before that: its decoder pool starts a spare ffmpeg as
  the player thread starts, so the first play takes one already running;
- **cold**: the same player with the warm-up left out (what every first play
  did before that): the first play starts its ffmpeg on demand, and the pool
  its spare beside it.

    .venv/bin/python -m bench.first_play --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.start_accuracy import percentile
from broadcast.audio.decode import DecoderPool
from broadcast.audio.native_decoders import NativeDecoders
from broadcast.audio.player import Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink
from protocol.events import Body, PlayFinished, PlayStarted

CLIP_S = 0.5


class UnwarmedPool(DecoderPool):
    """The pool as it was: nothing started before the first play asks."""

    def warm(self) -> None:
        return None


def tone(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate=48000:duration={CLIP_S}", "-ac", "1",
         "-c:a", "libmp3lame", "-b:a", "64k", str(path)],
        check=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    return path


def trial(work: Path, kind: str, clip: Path, settle_s: float) -> None:
    """A child: one agent's start, two plays; prints its figures as one JSON line."""
    late: dict[str, float] = {}
    done = threading.Event()

    def on_event(body: Body) -> None:
        if isinstance(body, PlayStarted):
            late[body.key] = body.actual_ms - body.planned_ms
        elif isinstance(body, PlayFinished):
            done.set()

    if kind == "native":
        small = NativeDecoders.find()
        if small is None:
            raise SystemExit("needs mpg123 (apt install mpg123)")
        pool = DecoderPool(spares=0, native=small.open)
    else:
        pool = DecoderPool() if kind == "warm" else UnwarmedPool()
    player = Player(WavFileSink(work / "played"), on_event=on_event, decoders=pool)
    time.sleep(settle_s)
    for key in ("first", "second"):
        done.clear()
        player.submit(PlayRequest(key, "command", 5, int(CLIP_S * 1000), clip_path=clip))
        if not done.wait(30):
            raise SystemExit(f"{kind}: {key} did not finish")
    taken = player.decoders_taken()
    player.close()
    print(json.dumps({"kind": kind, **late, "decoders": taken}), flush=True)


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<30} n={len(values):<3} p50 {percentile(values, 50):7.1f}  "
        f"p90 {percentile(values, 90):7.1f}  max {max(values):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="of each kind")
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument("--trial", nargs=3, help=argparse.SUPPRESS)  # KIND WORK CLIP
    args = parser.parse_args()
    if args.trial:
        kind, work, clip = args.trial
        trial(Path(work), kind, Path(clip), args.settle_s)
        return

    print(f"load average before: {os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}")
    kinds = ("native", "cold", "warm")
    results: dict[str, list[tuple[float, float, int, int]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="xaso-bench-first-") as tmp:
        clip = tone(Path(tmp) / "tone.mp3")
        for n in range(args.trials):
            for kind in kinds[n % 3 :] + kinds[: n % 3]:
                work = Path(tmp) / f"{kind}-{n}"
                argv = [sys.executable, "-m", "bench.first_play", "--settle-s",
                        str(args.settle_s), "--trial", kind, str(work), str(clip)]  # fmt: skip
                out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                taken = got["decoders"]
                results[kind].append((got["first"], got["second"], taken["cold"], taken["native"]))
    print(f"\nplay-now lateness (actual first sample - arrival), {args.trials} starts of each")
    for kind in kinds:
        runs = results[kind]
        print(summary(f"{kind}: first play after start", [run[0] for run in runs]))
        print(summary(f"{kind}: second play", [run[1] for run in runs]))
        cold, small = sum(run[2] for run in runs), sum(run[3] for run in runs)
        print(f"{'':<30} ffmpeg started on demand: {cold}, mpg123: {small}, in {len(runs)} starts")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
