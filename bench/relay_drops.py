"""Stream relays through drops: how soon the stream is back on air, and what is reported.

Each trial relays the loopback station (tests/stream_station.py: live MP3 in
real time, a 2 s burst on connect) through a Player on a WavFileSink with the
speaker's default relay settings (reconnects spread up to 10 s), takes the
station off air ``--after-s`` into the relay for each ``--drops-s``, and
prints, from the play's ``play.finished``:

- **back after**: from the station's return to the stream on air again (the
  gap's end): the backoff's wait plus the reconnect and the jitter buffer;
- **gap**: the reported gap's length against the drop (the station's burst
  and the jitter buffer air for a while after the cut);
- **asked**: requests the station refused during the drop;
- whether the relay completed, and its played_ms against relayed + gaps.

    .venv/bin/python -m bench.relay_drops --drops-s 10 10 10 60
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from broadcast.audio.player import Player
from broadcast.audio.relay import RelayPolicy
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink
from protocol.events import Body
from tests.stream_station import Station


def trial(work: Path, drop_s: float, after_s: float, tail_s: float) -> dict[str, Any]:
    station = Station(work)
    ends: list[dict[str, Any]] = []
    started = threading.Event()
    done = threading.Event()

    def on_event(body: Body) -> None:
        if body.TYPE == "play.started":
            started.set()
        elif body.TYPE in ("play.finished", "play.missed"):
            ends.append(body.wire())
            done.set()

    player = Player(WavFileSink(work / "played"), on_event=on_event, relay=RelayPolicy())
    try:
        length_s = after_s + drop_s + tail_s
        relay = PlayRequest("vov", "command", 2, int(length_s * 1000), stream_url=station.url)
        player.submit(relay)
        assert started.wait(30), "the relay never started"
        time.sleep(after_s)
        station.set("off")
        time.sleep(drop_s)
        station.set("tone")
        back_ms = time.time_ns() / 1e6
        refused = station.refused
        assert done.wait(length_s + 60), "the relay never ended"
    finally:
        player.close()
        station.close()
    (end,) = ends
    gaps = end.get("gaps", [])
    first = end["actual_ms"]
    lost_ms = sum(g["length_ms"] for g in gaps)
    gap_end = max((first + g["offset_ms"] + g["length_ms"] for g in gaps), default=first)
    return {
        "drop_s": drop_s,
        "outcome": end.get("outcome", end.get("reason")),
        "gaps": len(gaps),
        "gap_s": lost_ms / 1000,
        "back_after_s": (gap_end - back_ms) / 1000,
        "asked": refused,
        "account_ms": end["played_ms"] - end.get("relayed_ms", 0) - lost_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops-s", type=float, nargs="+", default=[10, 10, 10, 60])
    parser.add_argument("--after-s", type=float, default=3)
    parser.add_argument("--tail-s", type=float, default=20)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}")
    print("drop   outcome    gaps  gap_s  back_after_s  asked  played-relayed-gaps")
    for drop in args.drops_s:
        with tempfile.TemporaryDirectory() as tmp:
            r = trial(Path(tmp), drop, args.after_s, args.tail_s)
        line = f"{r['drop_s']:4.0f} s  {r['outcome']:<9}  {r['gaps']:4d}  {r['gap_s']:5.1f}"
        line += f"  {r['back_after_s']:12.1f}  {r['asked']:5d}  {r['account_ms']:.0f} ms"
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
