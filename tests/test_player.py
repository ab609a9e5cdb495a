"""The player end to end: real ffmpeg decoding real tones into the WAV-file sink.

Nothing above the sink is faked. Each test checks what the fake sound card
recorded (frequency, length, level, start time) and the proof-of-play events.
Time bounds are generous on purpose; the precise figures are the benchmarks'.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from broadcast.audio.amplifier import Amplifier
from broadcast.audio.player import Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import AlsaSink, SinkError
from tests.player_helpers import (
    LENGTH_TOLERANCE_S,
    Clips,
    Events,
    Rig,
    assert_tone,
    now_ms,
    req,
    rms_dbfs,
)
from tests.timing import EARLY_MS, on_time

# what plays, when, how loud


def test_timed_requests_play_the_right_audio_at_the_planned_time(rig: Rig, clips: Clips) -> None:
    at1 = now_ms() + 700
    at2 = at1 + 900
    rig.player.submit(req("second", clips["b880"], at_ms=at2))
    rig.player.submit(req("first", clips["a440"], at_ms=at1, label="Bản tin sáng"))
    rig.events.wait("play.finished", "second")

    assert [e["key"] for e in rig.sink.played()] == ["first", "second"]
    for key, at, freq, seconds in (("first", at1, 440, 0.6), ("second", at2, 880, 0.4)):
        entry, x = rig.recording(key)
        assert_tone(x, freq, seconds)
        assert on_time(entry["started_ms"], at)
        started = rig.events.of("play.started", key)[0]
        assert started["planned_ms"] == at
        assert on_time(started["actual_ms"], at)
        finished = rig.events.of("play.finished", key)[0]
        assert finished["outcome"] == "completed"
        assert abs(finished["played_ms"] - seconds * 1000) < 30
    assert rig.recording("first")[0]["label"] == "Bản tin sáng"


def test_gain_and_device_volume_set_the_level(rig: Rig, clips: Clips) -> None:
    clip = clips["short660"]
    rig.player.submit(req("0db", clip))
    rig.player.submit(req("-6db", clip, gain_db=-6))
    rig.events.wait("play.finished", "-6db")
    rig.player.set_volume(50)
    rig.player.submit(req("half-volume", clip))
    rig.events.wait("play.finished", "half-volume")
    rig.player.set_volume(0)
    rig.player.submit(req("muted", clip))
    rig.events.wait("play.finished", "muted")

    level = {key: rms_dbfs(rig.recording(key)[1]) for key in ("0db", "-6db", "half-volume")}
    assert abs(level["0db"] - -12) < 0.5
    assert abs(level["0db"] - level["-6db"] - 6) < 0.5
    assert abs(level["0db"] - level["half-volume"] - 6.02) < 0.5
    assert not np.any(rig.recording("muted")[1])


def test_a_volume_change_applies_to_what_is_playing(rig: Rig, clips: Clips) -> None:
    rig.player.submit(req("long", clips["long440"]))
    rig.events.wait("play.started", "long")
    time.sleep(0.8)
    rig.player.set_volume(50)
    rig.events.wait("play.finished", "long")
    _, x = rig.recording("long")
    assert abs(len(x) / 48000 - 2.0) < 0.1
    before, after = rms_dbfs(x[: 48000 // 2]), rms_dbfs(x[-48000 // 2 :])
    assert abs(before - after - 6.02) < 0.5


def test_repeat_plays_back_to_back(rig: Rig, clips: Clips) -> None:
    rig.player.submit(req("thrice", clips["short660"], repeat=3))
    finished = rig.events.wait("play.finished", "thrice")
    assert finished["outcome"] == "completed"
    assert len(rig.events.of("play.started", "thrice")) == 1
    _, x = rig.recording("thrice")
    assert_tone(x, 660, 0.9)


# stop, by priority (what cuts in and what queues: tests/test_preemption.py)


def test_stop_ends_what_plays_and_drops_what_waits(rig: Rig, clips: Clips) -> None:
    rig.player.submit(req("playing", clips["long440"], priority=3))
    rig.player.submit(req("waiting", clips["short660"], priority=2))
    rig.events.wait("play.started", "playing")
    time.sleep(0.2)
    assert rig.player.stop(priority_max=3) == 2
    assert rig.events.wait("play.finished", "playing")["outcome"] == "stopped"
    assert rig.events.wait("play.missed", "waiting")["reason"] == "stopped"
    assert len(rig.recording("playing")[1]) / 48000 < 1.0
    assert rig.player.stop(priority_max=9) == 0

    rig.player.submit(req("after", clips["short660"]))
    assert rig.events.wait("play.finished", "after")["outcome"] == "completed"


def test_stop_spares_higher_priorities(rig: Rig, clips: Clips) -> None:
    rig.player.submit(req("emergency", clips["short660"], priority=9))
    assert rig.player.stop(priority_max=6) == 0
    assert rig.events.wait("play.finished", "emergency")["outcome"] == "completed"


# what goes wrong


def test_unreadable_clips_are_missed_and_the_next_one_plays(
    rig: Rig, clips: Clips, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.clip"
    junk.write_bytes(np.random.default_rng(1).bytes(20_000))
    empty = tmp_path / "empty.clip"
    empty.write_bytes(b"")
    rig.player.submit(req("junk", junk))
    rig.player.submit(req("gone", tmp_path / "missing.clip"))
    # timed, with room for the two before it to fail first on a loaded machine (each
    # starts a decoder), or it would be missed as late before its clip is found empty
    rig.player.submit(req("empty", empty, at_ms=now_ms() + 3000))
    rig.player.submit(req("good", clips["short660"]))
    rig.events.wait("play.finished", "good")

    for key in ("junk", "gone", "empty"):
        missed = rig.events.wait("play.missed", key)
        assert missed["reason"] == "clip_unreadable"
        assert missed["error"]
        assert not rig.events.of("play.started", key)
    assert "No such file" in rig.events.of("play.missed", "gone")[0]["error"]
    assert_tone(rig.recording("good")[1], 660, 0.3)


def test_a_truncated_clip_plays_what_it_has(rig: Rig, clips: Clips, tmp_path: Path) -> None:
    data = clips["long440"].read_bytes()
    cut = tmp_path / "cut.clip"
    cut.write_bytes(data[: len(data) // 2])
    rig.player.submit(req("cut", cut))
    assert rig.events.wait("play.finished", "cut")["outcome"] == "completed"
    assert_tone(rig.recording("cut")[1], 440, 1.0)


def test_a_request_too_late_is_missed(rig: Rig, clips: Clips) -> None:
    rig.player.submit(req("late", clips["short660"], at_ms=now_ms() - 3000))
    rig.player.submit(req("slightly-late", clips["short660"], at_ms=now_ms() - 500))
    assert rig.events.wait("play.missed", "late")["reason"] == "late"
    assert rig.events.wait("play.finished", "slightly-late")["outcome"] == "completed"


# the amplifier


def test_the_amplifier_is_on_a_preroll_before_a_timed_start(tmp_path: Path, clips: Clips) -> None:
    factory = MockFactory()
    changes: list[tuple[float, bool, str]] = []
    amp = Amplifier(
        17,
        preroll_ms=300,
        hold_s=0.3,
        pin_factory=factory,
        on_change=lambda on, why: changes.append((time.time_ns() / 1e6, on, why)),
    )
    rig = Rig(tmp_path, amplifier=amp)
    try:
        at = now_ms() + 1000
        rig.player.submit(req("timed", clips["short660"], at_ms=at))
        rig.events.wait("play.started", "timed")
        assert factory.pin(17).state is True
        rig.events.wait("play.finished", "timed")
        deadline = time.monotonic() + 5
        while len(changes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rig.player.close()
        amp.close()
    (on_ms, _, on_why), (off_ms, off, off_why) = changes
    assert (on_why, off, off_why) == ("preroll", False, "idle")
    started_ms = rig.recording("timed")[0]["started_ms"]
    # the relay is on ahead of the first sample, which is on time
    assert at - 300 - EARLY_MS <= on_ms <= started_ms and on_time(started_ms, at)
    assert off_ms - (at + 300) > 250  # held after the audio
    assert factory.pin(17).state is False


def test_an_immediate_request_waits_for_the_amplifier_preroll(tmp_path: Path, clips: Clips) -> None:
    amp = Amplifier(17, preroll_ms=400, hold_s=1, pin_factory=MockFactory())
    rig = Rig(tmp_path, amplifier=amp)
    try:
        rig.player.submit(req("now", clips["short660"]))
        started = rig.events.wait("play.started", "now")
    finally:
        rig.player.close()
        amp.close()
    assert started["actual_ms"] - started["planned_ms"] >= 390


# live streams


class _Radio(http.server.BaseHTTPRequestHandler):
    """An Icecast-like source: no length, the connection's end is the stream's end.

    With ``outage``, the first connection ends a third of the way in and the
    next one finds no source on the mount (Icecast answers 404 while the studio
    reconnects), which ffmpeg's own reconnect
    does not survive: the relay must start it again. From the third on, the
    station is back and plays on (the body over and over) until the relay leaves.
    """

    body = b""
    outage = False
    requests = 0
    url = ""

    def do_GET(self) -> None:
        cls = type(self)
        cls.requests += 1
        data = cls.body
        if cls.outage and cls.requests == 1:
            data = data[: len(data) // 3]
        if cls.outage and cls.requests == 2:
            self.send_error(404, "no source on this mount")
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.end_headers()
        if cls.outage and cls.requests > 2:  # back on air: a station plays on until we leave,
            with contextlib.suppress(OSError):  # however long a busy machine took to come
                for _ in range(100):
                    self.wfile.write(data)
            return
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def radio(body: bytes, *, outage: bool = False) -> Iterator[type[_Radio]]:
    handler: type[_Radio] = type("Radio", (_Radio,), {"body": body, "outage": outage})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/vov1.mp3"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def stream_req(key: str, url: str, duration_ms: int, **kw: Any) -> PlayRequest:
    return PlayRequest(key, "command", 2, duration_ms, stream_url=url, **kw)


def test_a_stream_is_relayed_for_its_duration(rig: Rig, clips: Clips) -> None:
    with radio(clips["long440"].read_bytes()) as station:
        at = now_ms() + 1500
        rig.player.submit(stream_req("vov", station.url, 1000, at_ms=at))
        finished = rig.events.wait("play.finished", "vov")
    assert finished["outcome"] == "completed"
    entry, x = rig.recording("vov")
    assert_tone(x, 440, 1.0)
    assert on_time(entry["started_ms"], at)
    assert rms_dbfs(x[:4800]) > -15  # buffered ahead: audio from the first sample
    assert not rig.events.of("audio.fault")


def test_a_dropped_stream_is_reconnected_until_its_time_is_up(rig: Rig, clips: Clips) -> None:
    with radio(clips["radio440"].read_bytes(), outage=True) as station:
        # long enough for the drop, the refusal and the third connection on a busy machine
        rig.player.submit(stream_req("vov", station.url, 6000))
        finished = rig.events.wait("play.finished", "vov")
        connections = station.requests
    assert finished["outcome"] == "completed"
    assert connections >= 3
    fault = rig.events.wait("audio.fault", "vov")
    assert fault["reason"] == "stream_dropped"
    _, x = rig.recording("vov")
    # the duration holds: it ends when planned, the time its first connection took left out
    skipped = rig.events.of("play.started", "vov")[0].get("skipped_ms", 0)
    assert abs(len(x) / 48000 - (6000 - skipped) / 1000) < LENGTH_TOLERANCE_S
    assert [g["reason"] for g in finished["gaps"]] == ["dropped"]  # the drop, reported
    assert_tone(x[-12000:], 440)  # audio again after the drop
    assert rms_dbfs(x[-12000:]) > -15


def test_an_unreachable_stream_is_missed_without_stopping_the_player(
    rig: Rig, clips: Clips
) -> None:
    rig.player.submit(stream_req("dead", "http://127.0.0.1:9/none.mp3", 1500))
    rig.player.submit(req("after", clips["short660"]))
    assert rig.events.wait("play.finished", "after")["outcome"] == "completed"
    dead = rig.events.of("play.missed", "dead")[0]
    assert dead["reason"] == "stream_unreachable"
    assert "refused" in dead["error"].lower()
    assert not rig.events.of("play.started", "dead")
    assert rig.events.of("audio.fault", "dead")[0]["reason"] == "stream_dropped"


# the ALSA sink, through a stand-in for aplay


FAKE_APLAY = """#!/bin/sh
echo "$@" > "$0.args"
if [ -e "$0.busy" ]; then
    rm "$0.busy"
    echo "aplay: main:831: audio open error: Device or resource busy" >&2
    exit 1
fi
cat > "$0.pcm"
"""


@pytest.fixture
def fake_aplay(tmp_path: Path) -> Path:
    path = tmp_path / "aplay"
    path.write_text(FAKE_APLAY)
    path.chmod(0o755)
    return path


def test_alsa_sink_command_line() -> None:
    assert AlsaSink("hw:1,0", buffer_ms=80).command(48000, 1) == [
        "aplay", "-q", "-D", "hw:1,0", "-t", "raw", "-f", "S16_LE",
        "-r", "48000", "-c", "1", "-B", "80000",
    ]  # fmt: skip


def test_alsa_sink_without_aplay_says_what_to_install(tmp_path: Path) -> None:
    sink = AlsaSink(aplay=str(tmp_path / "no-aplay"))
    with pytest.raises(SinkError, match="install alsa-utils") as err:
        sink.open(48000, 1)
    assert err.value.reason == "no_player"


def test_alsa_sink_pipes_the_pcm_to_aplay(tmp_path: Path, fake_aplay: Path, clips: Clips) -> None:
    events = Events()
    player = Player(AlsaSink("plughw:0", aplay=str(fake_aplay)), on_event=events)
    try:
        player.submit(req("alsa", clips["short660"]))
        assert events.wait("play.finished", "alsa")["outcome"] == "completed"
    finally:
        player.close()
    args = fake_aplay.with_suffix(".args").read_text().split()
    assert args[args.index("-D") + 1] == "plughw:0"
    pcm = np.frombuffer(fake_aplay.with_suffix(".pcm").read_bytes(), dtype="<i2").astype(float)
    assert_tone(pcm, 660, 0.3)


def test_a_busy_sound_card_is_reported_and_tried_again(
    tmp_path: Path, fake_aplay: Path, clips: Clips
) -> None:
    fake_aplay.with_suffix(".busy").touch()
    events = Events()
    player = Player(AlsaSink(aplay=str(fake_aplay)), on_event=events)
    try:
        player.submit(req("busy", clips["short660"]))
        assert events.wait("play.finished", "busy")["outcome"] == "completed"
    finally:
        player.close()
    fault = events.of("audio.fault", "busy")[0]
    assert fault["reason"] == "device_busy"
    assert "Device or resource busy" in fault["detail"]
    pcm = np.frombuffer(fake_aplay.with_suffix(".pcm").read_bytes(), dtype="<i2").astype(float)
    assert len(pcm) / 48000 > 0.2
