"""Skew between speakers playing one relayed stream: in step, against joining where it is.

A loopback station (tests/stream_station.py, pink noise) is pulled once by the
controller's own StationPull (paced, stamped with its epoch) into a real
Icecast mount. ``--speakers`` Players, each on its own WavFileSink, relay the
mount, told ``--stagger-s`` apart (each joins later than the one before).
Every speaker's recording is lined up against the first one's on the sinks'
own timestamps (first sample's wall instant, then the sample count) by
cross-correlation, in 200 ms windows every 250 ms of their common stretch;
the skew is the lag of best match.

Two modes in the same run: ``in step`` (the site's mount read by the speaker,
broadcast/audio/timed_stream.py) and, as the baseline, ``as joined``: the same
mount pulled by ffmpeg with the credentials in the URL, which is how a speaker
played a stream before (and how it plays one without the epoch tag).

Clock sync: every speaker here runs on one host, one clock, so the figure is
the method's own error. In the field each Pi adds its clock's offset from the
others (chrony over a LAN: well under 1 ms; over 4G: a few ms).

    .venv/bin/python -m bench.stream_skew --speakers 5 --seconds 20
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI

from broadcast.audio.player import Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink
from cli.brokers.icecast import Icecast
from controller.radio.station_pulls import StationPull
from controller.radio.streams import LISTENER_AUTH_PATH, StreamServer, listener_auth_router
from protocol.events import Body
from tests.audio_helpers import sink_timeline, skew_ms
from tests.http_helpers import serve
from tests.stream_station import Station

USER, PASSWORD = "loa-bench", "mat-khau-loa"


@contextmanager
def mount(work: Path) -> Iterator[tuple[StreamServer, StationPull]]:
    """The station pulled into ``/station-1.ogg`` on a real Icecast that admits USER."""
    app = FastAPI()
    app.include_router(listener_auth_router(lambda u, p: (u, p) == (USER, PASSWORD)))
    station = Station(work / "radio", noise=True)
    station.set("noise")
    with serve(app) as base:
        icecast = Icecast(work / "icecast", base + LISTENER_AUTH_PATH)
        icecast.start()
        streams = StreamServer(icecast.url, icecast.source_password)
        pull = StationPull(1, station.url, streams)
        try:
            if not pull.on_air.wait(30):
                raise TimeoutError("the pull never went on air")
            yield streams, pull
        finally:
            pull.stop()
            icecast.stop()
            station.close()


def play(
    work: Path, url: str, auth: str | None, *, n: int, stagger_s: float, seconds: float
) -> None:
    done = threading.Semaphore(0)

    def on_event(body: Body) -> None:
        if body.TYPE in ("play.finished", "play.missed"):
            done.release()

    players = []
    for i in range(n):
        player = Player(WavFileSink(work / f"loa-{i}"), on_event=on_event)
        length_ms = int((seconds + (n - 1 - i) * stagger_s) * 1000)  # all end together
        player.submit(PlayRequest(f"relay-{i}", "command", 2, length_ms, stream_url=url,
                                  stream_auth=auth))  # fmt: skip
        players.append(player)
        time.sleep(stagger_s)
    for _ in players:
        done.acquire(timeout=seconds + n * stagger_s + 60)
    for player in players:
        player.close()


def skews(work: Path, n: int) -> list[float]:
    lines = [sink_timeline(work / f"loa-{i}") for i in range(n)]
    start = max(t for t, _ in lines) + 2500  # into the last one's play, past the search
    end = min(t + len(s) / 48 for t, s in lines) - 2500
    out = []
    for k in range(1, n):
        for at in np.arange(start, end - 200, 250):
            lag, alike = skew_ms(lines[0], lines[k], float(at), window_ms=200, search_ms=2000)
            if alike > 0.5:  # the same audio (a gap in either: no match to read)
                out.append(abs(lag))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speakers", type=int, default=5)
    parser.add_argument("--stagger-s", type=float, default=1.5)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    token = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    print(f"{'mode':10} {'windows':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "radio").mkdir()
        with mount(work) as (streams, pull):
            url = streams.listener_url(pull.mount)
            plain = url.replace("http://", f"http://{USER}:{PASSWORD}@")
            for mode, where, auth in (("in step", url, token), ("as joined", plain, None)):
                out = work / mode.replace(" ", "-")
                play(
                    out,
                    where,
                    auth,
                    n=args.speakers,
                    stagger_s=args.stagger_s,
                    seconds=args.seconds,
                )
                lags = np.array(skews(out, args.speakers))
                p50, p99 = np.percentile(lags, [50, 99]) if len(lags) else (np.nan, np.nan)
                print(f"{mode:10} {len(lags):7d} {p50:7.2f} {p99:7.2f} {lags.max():7.2f}")


if __name__ == "__main__":
    main()
