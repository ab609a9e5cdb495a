"""Start accuracy: planned against actual first sample, on one player and across five.

Part 1 feeds one Player (WavFileSink, real ffmpeg, an amplifier on a mock pin)
timed requests the way the schedule runner does, a couple of seconds ahead of
their ``at``, and reads the actual start from the sink's log: the wall-clock
time the first sample was handed over. The same-run baseline is the waiting
alone: a bare loop that sleeps until a few ms before each target, spins on
the clock, and notes the time, with no decoding, no player, no sink.

Part 2 starts five processes, each its own Player and WavFileSink as five
agents on one village's loudspeakers would be, gives them the same ``at`` for
each round, and takes the spread (max - min) of their recorded starts. The
baseline is five processes running the bare loop on the same targets.

    .venv/bin/python -m bench.start_accuracy --starts 200 --rounds 50
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

from gpiozero.pins.mock import MockFactory

from broadcast.audio.amplifier import Amplifier
from broadcast.audio.player import SPIN_MS, Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink, wall_ms
from protocol.events import Body, PlayFinished, PlayMissed

CLIP_S = 0.1
SPACING_MS = 300  # one start every SPACING_MS in part 1
LEAD_MS = 2000  # how far ahead each request is submitted
ROUND_MS = 1000  # one round a second in part 2: five agents share this machine's two cores
TARGET_MS = 10.0


def tone(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate=48000:duration={CLIP_S}", "-ac", "1", str(path)],
        check=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    return path


def bare_wait(at_ms: float) -> float:
    """The floor: sleep until a few ms before, spin, and note when the write would go."""
    left = at_ms - SPIN_MS - wall_ms()
    if left > 0:
        time.sleep(left / 1000)
    while (now := wall_ms()) < at_ms:
        pass
    return now


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, errors: list[float]) -> str:
    early = sum(1 for e in errors if e < 0)
    return (
        f"{name:<34} n={len(errors):<4} p50 {percentile(errors, 50):7.3f}  "
        f"p99 {percentile(errors, 99):7.3f}  max {max(errors):7.3f}  "
        f"min {min(errors):7.3f} ms  (early: {early})"
    )


def one_player(starts: int, work: Path) -> tuple[list[float], list[float]]:
    clip = tone(work / "tone.wav")
    sink = WavFileSink(work / "player")
    amp = Amplifier(17, preroll_ms=1500, hold_s=10, pin_factory=MockFactory())
    player = Player(sink, amplifier=amp, on_event=lambda body: None)
    t0 = round(wall_ms()) + LEAD_MS
    targets = [t0 + i * SPACING_MS for i in range(starts)]
    for i, at in enumerate(targets):
        left = at - LEAD_MS - wall_ms()
        if left > 0:
            time.sleep(left / 1000)
        player.submit(PlayRequest(f"s{i}", "schedule", 2, 100, clip_path=clip, at_ms=at))
    time.sleep((targets[-1] - wall_ms()) / 1000 + CLIP_S + 0.5)
    player.close()
    amp.close()
    started = {e["key"]: e["started_ms"] for e in sink.played()}
    missing = [i for i in range(starts) if f"s{i}" not in started]
    if missing:
        raise SystemExit(f"{len(missing)} starts were not recorded: {missing[:5]}")
    player_errors = [started[f"s{i}"] - at for i, at in enumerate(targets)]

    first = wall_ms() + 100
    bare_errors = [bare_wait(at) - at for at in (first + i * 20 for i in range(starts))]
    return player_errors, bare_errors


# part 2: five agents, each a process


def agent(directory: Path) -> None:
    """A child: one Player and sink; reads "KEY AT_MS" lines, writes its log, exits on EOF."""
    clip = tone(directory / "tone.wav")
    sink = WavFileSink(directory / "played")

    def complain(body: Body) -> None:
        if isinstance(body, PlayMissed) or (
            isinstance(body, PlayFinished) and body.outcome != "completed"
        ):
            print(f"{directory.name}: {body.TYPE} {body.wire()}", file=sys.stderr, flush=True)

    player = Player(sink, on_event=complain)
    print("ready", flush=True)
    last = 0
    for line in sys.stdin:
        key, at = line.split()
        last = int(at)
        player.submit(PlayRequest(key, "command", 9, 100, clip_path=clip, at_ms=last))
    time.sleep(max(0.0, (last - wall_ms()) / 1000) + 0.5)
    player.close()


def bare_agent() -> None:
    """A child for the baseline: the bare wait on each target it reads; prints the times."""
    print("ready", flush=True)
    times: dict[str, float] = {}
    waiters = []
    for line in sys.stdin:
        key, at = line.split()
        waiter = threading.Thread(target=lambda k=key, a=int(at): times.update({k: bare_wait(a)}))
        waiter.start()
        waiters.append(waiter)
    for waiter in waiters:
        waiter.join()
    print(json.dumps(times), flush=True)


def fleet(players: int, rounds: int, work: Path, bare: bool) -> list[float]:
    """The spread of start times across ``players`` processes, one value per round."""
    role = "--bare-agent" if bare else "--agent"
    procs = []
    for n in range(players):
        d = work / f"{'bare' if bare else 'agent'}-{n}"
        d.mkdir()
        argv = [sys.executable, "-m", "bench.start_accuracy", role, str(d)]
        procs.append(
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    t0 = round(wall_ms()) + LEAD_MS
    targets = [t0 + r * ROUND_MS for r in range(rounds)]
    for r, at in enumerate(targets):
        left = at - LEAD_MS + ROUND_MS / 2 - wall_ms()  # like a command arriving ~1.8 s ahead
        if left > 0:
            time.sleep(left / 1000)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"r{r} {at}\n")
            p.stdin.flush()
    results: list[dict[str, float]] = []
    for n, p in enumerate(procs):
        assert p.stdin is not None and p.stdout is not None
        p.stdin.close()
        out = p.stdout.read()
        p.wait(60)
        if bare:
            results.append(json.loads(out.strip().splitlines()[-1]))
        else:
            log = WavFileSink(work / f"agent-{n}" / "played").played()
            results.append({e["key"]: e["started_ms"] for e in log})
    spreads = []
    for r in range(rounds):
        times = [res[f"r{r}"] for res in results if f"r{r}" in res]
        if len(times) != players:
            raise SystemExit(f"round {r}: only {len(times)} of {players} players started")
        spreads.append(max(times) - min(times))
    return spreads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--players", type=int, default=5)
    parser.add_argument("--agent", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bare-agent", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        agent(args.agent)
        return
    if args.bare_agent:
        bare_agent()
        return

    print(f"load average before: {os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="xaso-bench-start-") as tmp:
        work = Path(tmp)
        player_errors, bare_errors = one_player(args.starts, work)
        print(f"\nplanned -> actual first sample, ms (actual - planned), {args.starts} starts")
        print(summary("Player + ffmpeg + WavFileSink", player_errors))
        print(summary("baseline: bare sleep + spin", bare_errors))
        p99 = percentile([abs(e) for e in player_errors], 99)
        print(f"|error| p99 {p99:.3f} ms: {'meets' if p99 <= TARGET_MS else 'MISSES'} the target")

        spreads = fleet(args.players, args.rounds, work, bare=False)
        bare_spreads = fleet(args.players, args.rounds, work, bare=True)
        print(f"\nskew across {args.players} processes given the same at (max - min), ms")
        print(summary(f"{args.players} Players, {args.rounds} rounds", spreads))
        print(summary(f"baseline: {args.players} bare loops", bare_spreads))
        p99 = percentile(spreads, 99)
        print(f"skew p99 {p99:.3f} ms: {'meets' if p99 <= TARGET_MS else 'MISSES'} the target")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
