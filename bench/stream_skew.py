"""Skew between speakers playing one stream, relayed or live: in step, against as joined.

``--streams relay``: a loopback station (tests/stream_station.py, pink noise)
pulled once by the controller's own StationPull (paced, stamped with its
epoch) into a real Icecast mount. ``--streams live``: WebM/Opus, what a
browser's MediaRecorder sends, fed in real time in 100 ms pieces to the
controller's own LiveEncoder (paced and stamped alike) on a mount of its own.
``--speakers`` Players, each on its own WavFileSink, play the mount, told
``--stagger-s`` apart (each joins later than the one before). Every
speaker's recording is lined up against the first one's on the sinks' own
timestamps (first sample's wall instant, then the sample count) by
cross-correlation, in 200 ms windows every 250 ms of their common stretch;
the skew is the lag of best match.

With ``--link-ms LOW HIGH`` each speaker reaches Icecast through its own
tests/lossy_link.py proxy, every chunk held LOW to HIGH ms (a countryside 4G
link; 0 0: straight to Icecast).

Two modes in the same run: ``in step`` (the site's mount read by the speaker,
broadcast/audio/timed_stream.py) and, as the baseline, ``as joined``: the same
mount pulled by ffmpeg with the credentials in the URL, which is how a speaker
played a stream before (and how it plays one without the epoch tag).

Clock sync: every speaker here runs on one host, one clock, so the figure is
the method's own error. In the field each Pi adds its clock's offset from the
others (chrony over a LAN: well under 1 ms; over 4G: a few ms).

    .venv/bin/python -m bench.stream_skew --speakers 5 --seconds 20 --link-ms 100 600
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI

from broadcast.audio.player import Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink
from cli.brokers.icecast import Icecast
from controller.radio.live_voice import LiveEncoder
from controller.radio.station_pulls import StationPull
from controller.radio.streams import LISTENER_AUTH_PATH, StreamServer, listener_auth_router
from protocol.events import Body
from tests.audio_helpers import sink_timeline, skew_ms
from tests.http_helpers import serve
from tests.lossy_link import LossyLink
from tests.stream_station import Station

USER, PASSWORD = "loa-bench", "mat-khau-loa"


@contextmanager
def server(work: Path) -> Iterator[StreamServer]:
    """A real Icecast whose mounts admit USER alone, as the controller's listener auth."""
    app = FastAPI()
    app.include_router(listener_auth_router(lambda u, p: (u, p) == (USER, PASSWORD)))
    with serve(app) as base:
        icecast = Icecast(work / "icecast", base + LISTENER_AUTH_PATH)
        icecast.start()
        try:
            yield StreamServer(icecast.url, icecast.source_password)
        finally:
            icecast.stop()


@contextmanager
def relayed(work: Path, streams: StreamServer) -> Iterator[str]:
    """The loopback station pulled once into its mount by the controller's StationPull."""
    (work / "radio").mkdir()
    station = Station(work / "radio", noise=True)
    station.set("noise")
    pull = StationPull(1, station.url, streams)
    try:
        if not pull.on_air.wait(30):
            raise TimeoutError("the pull never went on air")
        yield pull.mount
    finally:
        pull.stop()
        station.close()


@contextmanager
def live(work: Path, streams: StreamServer, seconds: float) -> Iterator[str]:
    """A live voice's mount: WebM/Opus (what a browser's MediaRecorder sends) fed to the
    controller's LiveEncoder in 100 ms pieces, in real time, as the WebSocket does."""
    webm = work / "voice.webm"
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi"]
    argv += ["-i", f"anoisesrc=d={seconds:.0f}:c=pink:r=48000:a=0.3", "-c:a", "libopus"]
    subprocess.run([*argv, "-b:a", "32k", "-f", "webm", str(webm)], check=True, timeout=300)
    data = webm.read_bytes()
    mount = streams.new_mount()
    encoder = LiveEncoder(streams, mount, work / "live.ogg")
    stop = threading.Event()

    def talk() -> None:
        t0, pos, per_s = time.monotonic(), 0, len(data) / seconds
        while pos < len(data) and not stop.wait(0.1):
            due = min(len(data), int((time.monotonic() - t0 + 0.1) * per_s))
            encoder.feed(data[pos:due])
            pos = due

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    try:
        deadline = time.monotonic() + 30
        while not encoder.pacer.pages_out:
            if time.monotonic() > deadline:
                raise TimeoutError("the live mount never went on air")
            time.sleep(0.1)
        yield mount
    finally:
        stop.set()
        talker.join(5)
        encoder.close()


@contextmanager
def links(streams: StreamServer, n: int, link_ms: list[float]) -> Iterator[list[str]]:
    """Each speaker's way to Icecast (host:port): its own delaying link, or none."""
    server = urlsplit(streams.url)
    assert server.hostname is not None and server.port is not None
    if not any(link_ms):
        yield [server.netloc] * n
        return
    made = [LossyLink(server.hostname, server.port, seed=i, latency_ms=(link_ms[0], link_ms[1]))
            for i in range(n)]  # fmt: skip
    try:
        yield [f"127.0.0.1:{link.start().port}" for link in made]
    finally:
        for link in made:
            link.close()


def play(work: Path, urls: list[str], auth: str | None, stagger_s: float, seconds: float) -> None:
    """Speaker ``i`` relays ``urls[i]``, told ``stagger_s`` after the one before; all end
    together."""
    done = threading.Semaphore(0)

    def on_event(body: Body) -> None:
        if body.TYPE in ("play.finished", "play.missed"):
            done.release()

    players, n = [], len(urls)
    for i, url in enumerate(urls):
        player = Player(WavFileSink(work / f"loa-{i}"), on_event=on_event)
        length_ms = int((seconds + (n - 1 - i) * stagger_s) * 1000)
        player.submit(PlayRequest(f"relay-{i}", "command", 2, length_ms, stream_url=url,
                                  stream_auth=auth))  # fmt: skip
        players.append(player)
        time.sleep(stagger_s)
    for _ in players:
        done.acquire(timeout=seconds + n * stagger_s + 60)
    for player in players:
        player.close()


def skews(work: Path, n: int) -> tuple[list[float], int]:
    """Every window's skew against the first speaker, and how many windows had no match
    (a gap in either recording)."""
    lines = [sink_timeline(work / f"loa-{i}") for i in range(n)]
    start = max(t for t, _ in lines) + 2500  # into the last one's play, past the search
    end = min(t + len(s) / 48 for t, s in lines) - 2500
    out, unmatched = [], 0
    for k in range(1, n):
        for at in np.arange(start, end - 200, 250):
            lag, alike = skew_ms(lines[0], lines[k], float(at), window_ms=200, search_ms=2000)
            if alike > 0.5:
                out.append(abs(lag))
            else:
                unmatched += 1
    return out, unmatched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speakers", type=int, default=5)
    parser.add_argument("--stagger-s", type=float, default=1.5)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--link-ms", type=float, nargs=2, default=[100, 600])
    parser.add_argument(
        "--streams", nargs="+", choices=["relay", "live"], default=["relay", "live"]
    )
    args = parser.parse_args()
    token = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    head = f"{'windows':>7} {'no match':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    print(f"{'stream':6} {'mode':10} {head}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in args.streams:
            here = work / kind
            here.mkdir()
            for mode, lags, unmatched in measure(here, kind, args, token):
                p50, p99 = np.percentile(lags, [50, 99]) if len(lags) else (np.nan, np.nan)
                figures = f"{p50:7.2f} {p99:7.2f} {lags.max():7.2f}"
                print(f"{kind:6} {mode:10} {len(lags):7d} {unmatched:8d} {figures}")


def measure(
    here: Path, kind: str, args: argparse.Namespace, token: str
) -> Iterator[tuple[str, np.ndarray, int]]:
    """Each mode's skews over one stream: (mode, skews, windows without a match)."""
    with server(here) as streams:
        length = 2 * (args.seconds + args.speakers * args.stagger_s + 15)  # both modes
        source = relayed(here, streams) if kind == "relay" else live(here, streams, length)
        with source as name, links(streams, args.speakers, args.link_ms) as ways:
            mount_url = streams.listener_url(name)
            urls = [mount_url.replace(urlsplit(mount_url).netloc, way) for way in ways]
            plain = [u.replace("http://", f"http://{USER}:{PASSWORD}@") for u in urls]
            for mode, where, auth in (("in step", urls, token), ("as joined", plain, None)):
                out = here / mode.replace(" ", "-")
                play(out, where, auth, args.stagger_s, args.seconds)
                found, unmatched = skews(out, args.speakers)
                yield mode, np.array(found), unmatched


if __name__ == "__main__":
    main()
