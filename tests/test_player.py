"""The player end to end: real ffmpeg decoding real tones into the WAV-file sink.

Nothing above the sink is faked. Each test checks what the fake sound card
recorded (frequency, length, level, start time) and the proof-of-play events.
Time bounds are generous on purpose; the precise figures are the benchmarks'.
"""

from __future__ import annotations

import http.server
import math
import subprocess
import threading
import time
import wave
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
from broadcast.audio.sinks import AlsaSink, SinkError, WavFileSink
from protocol.events import Body

Clips = dict[str, Path]
START_TOLERANCE_MS = 50
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


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    d = tmp_path_factory.mktemp("clips")
    return {
        "a440": tone(d / "a440.mp3", 440, 0.6),
        "b880": tone(d / "b880.wav", 880, 0.4),
        "long440": tone(d / "long440.mp3", 440, 2.0),
        "e1000": tone(d / "e1000.ogg", 1000, 0.5),
        "short660": tone(d / "short660.wav", 660, 0.3),
        "radio440": tone(d / "radio440.mp3", 440, 4.0),
    }


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
        self, event_type: str, key: str | None = None, count: int = 1, timeout_s: float = 10
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.of(event_type, key)) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"no {event_type} for {key}: {self.items}"
                self._cond.wait(left)
            return self.of(event_type, key)[count - 1]


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


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.player.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def req(key: str, clip: Path, priority: int = 2, **kw: Any) -> PlayRequest:
    return PlayRequest(key, "command", priority, 1000, clip_path=clip, **kw)


def assert_tone(x: np.ndarray, freq_hz: float, seconds: float | None = None) -> None:
    assert abs(dominant_hz(x) - freq_hz) < 5
    if seconds is not None:
        assert abs(len(x) / 48000 - seconds) < LENGTH_TOLERANCE_S


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
        assert abs(entry["started_ms"] - at) < START_TOLERANCE_MS
        started = rig.events.of("play.started", key)[0]
        assert started["planned_ms"] == at
        assert abs(started["actual_ms"] - at) < START_TOLERANCE_MS
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


# priorities


def test_an_emergency_cuts_a_normal_item(rig: Rig, clips: Clips) -> None:
    rig.player.submit(req("normal", clips["long440"], priority=2))
    rig.events.wait("play.started", "normal")
    time.sleep(0.3)
    playing = rig.player.now_playing()
    assert playing is not None
    assert playing["key"] == "normal"
    submitted = time.time_ns() / 1e6
    rig.player.submit(req("storm", clips["e1000"], priority=9))
    rig.events.wait("play.finished", "storm")

    normal, x = rig.recording("normal")
    assert len(x) / 48000 < 1.5  # cut, well before its 2 s
    assert_tone(x, 440)
    finished = rig.events.of("play.finished", "normal")[0]
    assert finished["outcome"] == "preempted"
    assert finished["played_ms"] < 1500
    storm, y = rig.recording("storm")
    assert_tone(y, 1000, 0.5)
    assert storm["started_ms"] - submitted < 500  # 200 ms is the target: see bench/preemption.py
    assert storm["started_ms"] >= normal["ended_ms"]
    time.sleep(0.2)
    assert len(rig.recordings("normal")) == 1  # not resumed
    assert rig.player.now_playing() is None


def test_a_preempted_item_resumes_where_it_stopped(tmp_path: Path, clips: Clips) -> None:
    rig = Rig(tmp_path, resume_preempted=True)
    try:
        rig.player.submit(req("normal", clips["long440"], priority=2))
        rig.events.wait("play.started", "normal")
        time.sleep(0.5)
        rig.player.submit(req("storm", clips["short660"], priority=9))
        second = rig.events.wait("play.finished", "normal", count=2)
    finally:
        rig.player.close()

    first = rig.events.of("play.finished", "normal")[0]
    assert (first["outcome"], second["outcome"]) == ("preempted", "completed")
    resumed = rig.events.of("play.started", "normal")[1]
    assert resumed["resumed_from_ms"] == first["played_ms"]
    assert [e["key"] for e in rig.sink.played()] == ["normal", "storm", "normal"]
    parts = [x for _, x in rig.recordings("normal")]
    total = sum(len(x) for x in parts) / 48000
    assert abs(total - 2.0) < 0.08  # an MP3 restarts on a frame boundary: a few ms again
    for part in parts:
        assert_tone(part, 440)


def test_equal_priority_queues_and_higher_goes_first(rig: Rig, clips: Clips) -> None:
    rig.player.submit(req("playing", clips["short660"], priority=5))
    rig.player.submit(req("normal", clips["short660"], priority=2))
    rig.player.submit(req("priority", clips["short660"], priority=4))
    rig.player.submit(req("same", clips["short660"], priority=5))
    rig.events.wait("play.finished", "normal")
    assert [e["key"] for e in rig.sink.played()] == ["playing", "same", "priority", "normal"]
    assert all(b["outcome"] == "completed" for b in rig.events.of("play.finished"))
    for _, x in (rig.recording(k) for k in ("playing", "same", "priority", "normal")):
        assert_tone(x, 660, 0.3)


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
    rig.player.submit(req("empty", empty, at_ms=now_ms() + 300))
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
    assert abs(on_ms - (at - 300)) < START_TOLERANCE_MS
    assert abs(rig.recording("timed")[0]["started_ms"] - at) < START_TOLERANCE_MS
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
    does not survive: the relay must start it again.
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
    assert abs(entry["started_ms"] - at) < START_TOLERANCE_MS
    assert rms_dbfs(x[:4800]) > -15  # buffered ahead: audio from the first sample
    assert not rig.events.of("audio.fault")


def test_a_dropped_stream_is_reconnected_until_its_time_is_up(rig: Rig, clips: Clips) -> None:
    with radio(clips["radio440"].read_bytes(), outage=True) as station:
        rig.player.submit(stream_req("vov", station.url, 3000))
        finished = rig.events.wait("play.finished", "vov")
        connections = station.requests
    assert finished["outcome"] == "completed"
    assert connections >= 3
    fault = rig.events.wait("audio.fault", "vov")
    assert fault["reason"] == "stream_dropped"
    _, x = rig.recording("vov")
    assert abs(len(x) / 48000 - 3.0) < LENGTH_TOLERANCE_S  # the duration holds
    assert_tone(x[-12000:], 440)  # audio again after the drop
    assert rms_dbfs(x[-12000:]) > -15


def test_an_unreachable_stream_fails_without_stopping_the_player(rig: Rig, clips: Clips) -> None:
    rig.player.submit(stream_req("dead", "http://127.0.0.1:9/none.mp3", 500))
    rig.player.submit(req("after", clips["short660"]))
    assert rig.events.wait("play.finished", "after")["outcome"] == "completed"
    dead = rig.events.of("play.finished", "dead")[0]
    assert dead["outcome"] == "failed"
    assert "no audio" in dead["error"]
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
