"""Live voice that came late: the words after a browser's stall are aired, not dropped.

A real Icecast with the controller's listener authentication, the controller's
own LiveEncoder fed WebM/Opus in real time in 100 ms pieces (as the live
page's WebSocket does), and a speaker's Player relaying the mount into a WAV
sink. The browser stalls 2.5 s mid-sentence, then sends what it held and goes
on: every page from there is later than the speakers' play-out delay, so on
the first timeline the speakers would drop the rest of the session. The
encoder starts the stream again from the late words, and the speaker hears
them.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI

from broadcast.audio.request import PlayRequest
from broadcast.fetch import basic_authorization
from cli.brokers.icecast import Icecast
from controller.radio.live_voice import LiveEncoder
from controller.radio.streams import LISTENER_AUTH_PATH, StreamServer, listener_auth_router
from protocol.ogg import PageReader
from tests.http_helpers import serve
from tests.player_helpers import Rig, dominant_hz

USER, PASSWORD = "loa-1", "mat-khau-loa-1"
BEFORE_HZ, AFTER_HZ = 500, 900
BEFORE_S, AFTER_S, STALL_S = 4.0, 6.0, 2.5


@pytest.fixture
def streams(tmp_path: Path) -> Iterator[StreamServer]:
    app = FastAPI()
    app.include_router(listener_auth_router(lambda u, p: (u, p) == (USER, PASSWORD)))
    with serve(app) as base:
        icecast = Icecast(tmp_path / "icecast", base + LISTENER_AUTH_PATH)
        icecast.start()
        try:
            yield StreamServer(icecast.url, icecast.source_password)
        finally:
            icecast.stop()


def _voice(path: Path) -> bytes:
    """What a browser records: WebM/Opus, one tone then another."""
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for hz, s in ((BEFORE_HZ, BEFORE_S), (AFTER_HZ, AFTER_S)):
        argv += ["-f", "lavfi", "-i", f"sine=f={hz}:d={s}:r=48000"]
    argv += ["-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1", "-c:a", "libopus"]
    subprocess.run([*argv, "-b:a", "32k", "-f", "webm", str(path)], check=True, timeout=120)
    return path.read_bytes()


def _talk(encoder: LiveEncoder, data: bytes) -> None:
    """In real time, 100 ms at a time; at BEFORE_S the browser stalls, then catches up."""
    per_s = len(data) / (BEFORE_S + AFTER_S)
    t0, pos, stalled = time.monotonic(), 0, False
    while pos < len(data):
        time.sleep(0.1)
        audio_s = time.monotonic() - t0 - (STALL_S if stalled else 0.0)
        if not stalled and audio_s >= BEFORE_S:
            time.sleep(STALL_S)  # nothing sent meanwhile; it comes all at once after
            stalled = True
            continue
        due = min(len(data), int((audio_s + 0.1) * per_s))
        encoder.feed(data[pos:due])
        pos = due


def test_a_stalled_browser_rejoins_the_speakers_and_its_late_words_are_heard(
    streams: StreamServer, tmp_path: Path
) -> None:
    data = _voice(tmp_path / "voice.webm")
    mount = streams.new_mount()
    encoder = LiveEncoder(streams, mount, tmp_path / "live.ogg")
    talker = threading.Thread(target=_talk, args=(encoder, data), daemon=True)
    talker.start()
    deadline = time.monotonic() + 60
    while not encoder.pacer.pages_out:
        assert time.monotonic() < deadline, "the live mount never went on air"
        time.sleep(0.05)
    speaker = Rig(tmp_path / "loa-1")
    length_ms = int((BEFORE_S + AFTER_S + STALL_S + 2) * 1000)
    speaker.player.submit(
        PlayRequest("live", "command", 2, length_ms, stream_url=streams.listener_url(mount),
                    stream_auth=basic_authorization(USER, PASSWORD))
    )  # fmt: skip
    try:
        talker.join(60)
        kind, body = speaker.events.ended("live", timeout_s=120)
    finally:
        encoder.close()
        speaker.player.close()
    assert encoder.pacer.rejoins >= 1  # more if the machine was too busy to keep time
    assert kind == "play.finished", body
    _, x = speaker.recording("live")
    windows = [x[i : i + 4800].astype(np.float64) for i in range(0, len(x) - 4800, 4800)]
    heard = [dominant_hz(w) for w in windows if np.sqrt(np.mean(w**2)) > 300]
    after = sum(abs(hz - AFTER_HZ) < 10 for hz in heard) / 10
    assert after > AFTER_S - 2.5, (after, encoder.pacer.rejoins, body)  # the late words aired
    # the recording (the clip in the library) holds the whole session, stall or not
    recorded = PageReader().feed((tmp_path / "live.ogg").read_bytes())
    assert (recorded[-1].granule - 312) / 48_000 > BEFORE_S + AFTER_S - 0.5
