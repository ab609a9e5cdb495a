"""Stream relays that hold: drops, dead air and an unreachable stream, end to end.

A real station on loopback (tests/stream_station.py) streams MP3 in real time
and is taken off air, made silent or never started; the player relays it
through real ffmpeg into the WAV-file sink. Each test checks what aired (the
recording) against the proof of play (``relayed_ms`` and ``gaps``). Waits
are generous and the bounds loose: the machine is shared.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from broadcast.audio.amplifier import Amplifier
from broadcast.audio.relay import RelayPolicy
from broadcast.audio.request import PlayRequest
from controller.fleet.alert_rules import DEAD_AIR, PlayEvent, Thresholds, active_alerts
from edge.config import ConfigError, parse_config
from plumbing.config_files import read_toml
from protocol.events import read_body
from tests.player_helpers import Clips, Rig, dominant_hz, now_ms, rms_dbfs
from tests.stream_station import BURST_S, Station
from tests.test_speaker import wait_event

# reconnects stay close together, so a test waits seconds, not the field's cap
QUICK = RelayPolicy(retry_base_s=0.25, retry_cap_s=1.5, dead_air_s=2.0)
RATE = 48_000


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    s = Station(tmp_path)
    yield s
    s.close()


def relay_rig(tmp_path: Path, policy: RelayPolicy = QUICK, **kw: Any) -> Rig:
    return Rig(tmp_path, relay=policy, **kw)


def stream(key: str, url: str, seconds: float) -> PlayRequest:
    return PlayRequest(key, "command", 2, int(seconds * 1000), stream_url=url)


def stretch(x: np.ndarray, from_s: float, to_s: float) -> np.ndarray:
    return x[int(from_s * RATE) : int(to_s * RATE)]


def take_off_air(rig: Rig, station: Station, key: str, after_s: float, for_s: float) -> None:
    """``after_s`` into the relay, off air for ``for_s``, then back."""
    rig.events.wait("play.started", key, timeout_s=20)
    time.sleep(after_s)
    station.set("off")
    time.sleep(for_s)
    station.set("tone")


def check_one_drop(rig: Rig, key: str, after_s: float, for_s: float, *, slack_s: float) -> None:
    """The relay ended on time, aired the stream again after the drop, and reports one gap
    of the drop's length (plus the reconnect and the jitter buffer) where it was."""
    finished = rig.events.wait("play.finished", key, timeout_s=for_s + 60)
    assert finished["outcome"] == "completed"
    (gap,) = finished["gaps"]
    assert gap["reason"] == "dropped"
    # the station's burst on connect airs after the cut
    assert after_s < gap["offset_ms"] / 1000 < after_s + BURST_S + 3.0
    assert for_s - BURST_S - 1.0 < gap["length_ms"] / 1000 < for_s + slack_s
    # the stream aired, the gap did not, and nothing else is missing
    assert abs(finished["relayed_ms"] + gap["length_ms"] - finished["played_ms"]) < 100
    fault = rig.events.of("audio.fault", key)
    assert [f["reason"] for f in fault] == ["stream_dropped"]  # once, not at every attempt
    _, x = rig.recording(key)
    assert abs(len(x) / RATE - finished["played_ms"] / 1000) < 0.05
    start, end = gap["offset_ms"] / 1000, (gap["offset_ms"] + gap["length_ms"]) / 1000
    assert rms_dbfs(stretch(x, start + 0.3, end - 0.3)) < -80  # the gap: silence
    after = stretch(x, end + 0.3, len(x) / RATE)
    assert len(after) > RATE and abs(dominant_hz(after) - 440) < 5 and rms_dbfs(after) > -15


def test_a_ten_second_drop_is_reconnected_and_reported(tmp_path: Path, station: Station) -> None:
    rig = relay_rig(tmp_path)
    try:
        rig.player.submit(stream("vov", station.url, 20))
        take_off_air(rig, station, "vov", 3, 10)
        check_one_drop(rig, "vov", 3, 10, slack_s=QUICK.retry_cap_s + 2.5)
    finally:
        rig.player.close()
    assert station.refused >= 3  # asked again through the drop, with backoff
    assert station.refused < 40  # ... not hammered


def test_a_sixty_second_drop_ends_with_the_stream_back(tmp_path: Path, station: Station) -> None:
    """The field's case: a 4G drop longer than the old relay's attempts (about 12 s), at the
    field's own backoff cap (10 s), so it takes a minute and a half."""
    rig = relay_rig(tmp_path, RelayPolicy())
    try:
        rig.player.submit(stream("vov", station.url, 80))
        take_off_air(rig, station, "vov", 3, 60)
        check_one_drop(rig, "vov", 3, 60, slack_s=RelayPolicy().retry_cap_s + 2.5)
    finally:
        rig.player.close()


def test_dead_air_plays_the_fallback_clip_until_the_stream_has_sound(
    tmp_path: Path, station: Station, clips: Clips
) -> None:
    policy = RelayPolicy(retry_base_s=0.25, retry_cap_s=1.0, dead_air_s=2.0,
                         fallback_clip=clips["short660"])  # fmt: skip
    rig = relay_rig(tmp_path, policy)
    try:
        rig.player.submit(stream("vov", station.url, 14))
        rig.events.wait("play.started", "vov", timeout_s=20)
        time.sleep(2)
        station.set("silent")
        fault = rig.events.wait("audio.fault", "vov", timeout_s=20)
        time.sleep(3)  # the fallback plays on, and the relay keeps asking
        station.set("tone")
        finished = rig.events.wait("play.finished", "vov", timeout_s=40)
    finally:
        rig.player.close()
    assert fault["reason"] == "dead_air" and "silent" in fault["detail"]
    # what the controller makes of the speaker's events, as they went on the wire
    told = [PlayEvent("loa-1", f"e{n}", t, now_ms(), read_body(t, body))
            for n, (t, body) in enumerate(rig.events.items) if t == "audio.fault"]  # fmt: skip
    assert (DEAD_AIR, "loa-1") in active_alerts([], told, Thresholds(), now_ms())
    assert finished["outcome"] == "completed"
    (gap,) = finished["gaps"]
    assert gap["reason"] == "dead_air"
    start, end = gap["offset_ms"] / 1000, (gap["offset_ms"] + gap["length_ms"]) / 1000
    assert 1.5 < start < 2 + BURST_S + 3.0  # where the silence began (the burst came first)
    assert end - start > policy.dead_air_s + 2.0
    _, x = rig.recording("vov")
    fallback = stretch(x, start + policy.dead_air_s + 0.3, end - 0.3)
    assert abs(dominant_hz(fallback) - 660) < 5 and rms_dbfs(fallback) > -20
    after = stretch(x, end + 0.3, len(x) / RATE)
    assert len(after) > RATE // 2 and abs(dominant_hz(after) - 440) < 5


def test_dead_air_without_a_fallback_stops_the_relay_cleanly(
    tmp_path: Path, station: Station
) -> None:
    station.set("silent")
    rig = relay_rig(tmp_path)
    try:
        rig.player.submit(stream("vov", station.url, 30))
        finished = rig.events.wait("play.finished", "vov", timeout_s=30)
    finally:
        rig.player.close()
    assert finished["outcome"] == "failed"
    assert "silent" in finished["error"] and "no fallback clip" in finished["error"]
    # dead air for dead_air_s, one more to come back, then the end: not the whole 30 s
    assert 2 * QUICK.dead_air_s - 0.5 < finished["played_ms"] / 1000 < 2 * QUICK.dead_air_s + 2
    assert finished["relayed_ms"] == 0
    assert [g["reason"] for g in finished["gaps"]] == ["dead_air"]
    assert rig.events.wait("audio.fault", "vov")["reason"] == "dead_air"


def amplifier(changes: list[tuple[float, bool]]) -> Amplifier:
    return Amplifier(
        17,
        preroll_ms=300,
        hold_s=0.5,
        pin_factory=MockFactory(),
        on_change=lambda on, why: changes.append((time.time_ns() / 1e6, on)),
    )


def test_an_unreachable_stream_turns_no_amplifier_on_and_is_missed(tmp_path: Path) -> None:
    changes: list[tuple[float, bool]] = []
    amp = amplifier(changes)
    rig = relay_rig(tmp_path, amplifier=amp)
    try:
        rig.player.submit(stream("dead", "http://127.0.0.1:9/none.mp3", 4))
        kind, body = rig.events.ended("dead", timeout_s=30)
        assert not amp.is_on
    finally:
        rig.player.close()
        amp.close()
    assert kind == "play.missed" and body["reason"] == "stream_unreachable"
    assert "refused" in body["error"].lower()  # what ffmpeg said, for the technician
    assert not rig.events.of("play.started")
    assert changes == []  # never switched
    assert rig.sink.played() == []  # nothing went to the sound device


def test_a_stream_that_comes_late_starts_when_its_audio_flows_and_ends_on_time(
    tmp_path: Path, station: Station
) -> None:
    changes: list[tuple[float, bool]] = []
    amp = amplifier(changes)
    rig = relay_rig(tmp_path, amplifier=amp)
    station.set("off")
    try:
        at = now_ms() + 1000
        rig.player.submit(PlayRequest("late", "command", 2, 8000, stream_url=station.url, at_ms=at))
        time.sleep(4)
        assert changes == [] and not rig.events.of("play.started")
        on_air = now_ms()
        station.set("tone")
        started = rig.events.wait("play.started", "late", timeout_s=20)
        finished = rig.events.wait("play.finished", "late", timeout_s=20)
    finally:
        rig.player.close()
        amp.close()
    assert changes and changes[0][0] >= on_air  # the amplifier only once audio came
    assert started["actual_ms"] >= on_air
    assert abs(started["skipped_ms"] - (started["actual_ms"] - at)) < 50
    # it still ends when planned: what waited for the stream is not tacked on at the end
    assert abs(started["actual_ms"] + finished["played_ms"] - (at + 8000)) < 300
    assert finished["outcome"] == "completed" and finished["gaps"] == []


def test_bad_relay_settings_are_refused_all_at_once_saying_what_to_do(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config" / "agent.example.toml"
    data = read_toml(example)
    data["speaker"] |= {"relay_fallback_clip": str(tmp_path / "none.mp3"),
                        "relay_dead_air_dbfs": 3, "relay_retry_max_s": 0}  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        parse_config(data, example)
    text = str(refused.value)
    assert "relay_fallback_clip" in text and "copy the clip onto the device" in text
    assert "relay_dead_air_dbfs" in text and "relay_retry_max_s" in text
    clip = tmp_path / "fallback.mp3"
    clip.write_bytes(b"\xff")
    data["speaker"] |= {"relay_fallback_clip": str(clip), "relay_dead_air_dbfs": -45,
                        "relay_retry_max_s": 30}  # fmt: skip
    policy = parse_config(data, example).speaker.relay_policy()
    assert (policy.fallback_clip, policy.dead_air_dbfs, policy.retry_cap_s) == (clip, -45, 30)


def test_a_volume_change_mid_relay_keeps_one_account(tmp_path: Path, station: Station) -> None:
    """The new gain restarts ffmpeg (and the connection): still one play, one account."""
    rig = relay_rig(tmp_path)
    try:
        rig.player.submit(stream("vov", station.url, 10))
        rig.events.wait("play.started", "vov", timeout_s=20)
        time.sleep(3)
        rig.player.set_volume(50)
        finished = rig.events.wait("play.finished", "vov", timeout_s=30)
    finally:
        rig.player.close()
    assert finished["outcome"] == "completed"
    lost = sum(g["length_ms"] for g in finished["gaps"])
    assert abs(finished["relayed_ms"] + lost - finished["played_ms"]) < 100
    assert finished["relayed_ms"] > 6_000  # both sides of the change counted
    assert all(g["offset_ms"] > 2_500 for g in finished["gaps"])  # where it happened
    _, x = rig.recording("vov")
    assert abs(rms_dbfs(stretch(x, 0.5, 2.5)) - rms_dbfs(stretch(x, 7, 9.5)) - 6.02) < 0.7


def test_a_speaker_relays_a_commanded_stream_through_a_drop_and_reports_it(
    fleet: Any, probe: Any, station: Station, tmp_path: Path
) -> None:
    """The agent in its own process, its [speaker] relay settings, the command and the
    proof of play over the real broker."""
    played = tmp_path / "played"
    speaker = {"sink": "wav", "wav_dir": str(played), "relay_retry_max_s": 1.5}
    fleet.spawn("loa-1", sections={"speaker": speaker})
    probe.status_is("loa-1", "online")
    cmd = "xaso/dev/loa-1/cmd"
    body = {"url": station.url, "duration_s": 18, "label": "VOV1"}
    probe.publish(cmd, fleet.seal("broadcast.stream", body, cmd_id="vov", to=cmd))
    assert probe.ack_for("loa-1", "vov")["result"] == {"queued": True}
    wait_event(probe, "play.started", "vov")
    time.sleep(2)
    station.set("off")
    time.sleep(7)
    station.set("tone")
    finished = wait_event(probe, "play.finished", "vov", timeout=60)
    assert finished["outcome"] == "completed" and finished["label"] == "VOV1"
    (gap,) = finished["gaps"]
    assert gap["reason"] == "dropped" and gap["length_ms"] > 2_000
    assert abs(finished["relayed_ms"] + gap["length_ms"] - finished["played_ms"]) < 100
    assert wait_event(probe, "audio.fault", "vov")["reason"] == "stream_dropped"


def test_a_relay_whose_mount_is_down_pulls_the_station_itself_without_credentials(
    tmp_path: Path, station: Station
) -> None:
    """The controller's mount of a station cannot be had (its pull is down): after two
    failed attempts the speaker asks the station's own URL, and airs it, with a gap for
    the attempts; the device's credentials never go to the station's server."""
    rig = relay_rig(tmp_path)
    req = PlayRequest(
        "vov", "command", 2, 12_000,
        stream_url="http://127.0.0.1:9/station-1.ogg", stream_auth="Basic bG9hLTE6eA==",
        direct_url=station.url,
    )  # fmt: skip
    try:
        rig.player.submit(req)
        finished = rig.events.wait("play.finished", "vov", timeout_s=60)
    finally:
        rig.player.close()
    assert finished["outcome"] == "completed"
    assert finished["relayed_ms"] > 8_000, finished  # the station aired
    assert station.requests >= 1 and station.with_credentials == 0
    _, x = rig.recording("vov")
    assert abs(dominant_hz(stretch(x, 2, len(x) / RATE - 0.5)) - 440) < 5
