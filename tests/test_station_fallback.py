"""A station's fallback clip, named by the relay itself (broadcast.stream's ``fallback``):
it airs while the stream cannot be reached, and the stream takes over when it comes.

The player relays the loopback station (tests/stream_station.py) through real
ffmpeg into the WAV sink, with a gpiozero MockFactory amplifier; the alert is
what the controller's rules make of the speaker's own events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from broadcast.audio.amplifier import Amplifier
from broadcast.audio.relay import UNREACHABLE, RelayPolicy
from broadcast.audio.request import PlayRequest
from controller.fleet.alert_rules import UNREACHABLE as UNREACHABLE_ALERT
from controller.fleet.alert_rules import PlayEvent, Thresholds, active_alerts
from protocol.events import read_body
from tests.player_helpers import Clips, Rig, dominant_hz, now_ms, rms_dbfs
from tests.stream_station import Station

QUICK = RelayPolicy(retry_base_s=0.25, retry_cap_s=1.0, dead_air_s=2.0)  # no fallback of its own
RATE = 48_000


def wait_until(check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    s = Station(tmp_path)
    yield s
    s.close()


def test_an_unreachable_station_airs_its_fallback_then_the_stream_when_it_comes(
    tmp_path: Path, station: Station, clips: Clips
) -> None:
    changes: list[bool] = []
    amp = Amplifier(17, preroll_ms=300, hold_s=0.5, pin_factory=MockFactory(),
                    on_change=lambda on, why: changes.append(on))  # fmt: skip
    rig = Rig(tmp_path, relay=QUICK, amplifier=amp)
    station.set("off")
    request = PlayRequest("vov", "command", 2, 16_000, stream_url=station.url,
                          fallback_path=clips["short660"], label="VOV1")  # fmt: skip
    try:
        rig.player.submit(request)
        dropped = rig.events.wait("audio.fault", "vov", timeout_s=30)
        fault = rig.events.wait("audio.fault", "vov", count=2, timeout_s=30)
        assert dropped["reason"] == "stream_dropped"  # told once, at the first attempt
        assert fault["reason"] == UNREACHABLE and "404" in fault["detail"]
        started = rig.events.wait("play.started", "vov", timeout_s=20)
        asked = station.refused
        wait_until(lambda: station.refused >= asked + 3)  # still asking while the clip airs
        station.set("tone")  # the station comes back while the fallback airs
        finished = rig.events.wait("play.finished", "vov", timeout_s=40)
    finally:
        rig.player.close()
        amp.close()
    assert changes[0] is True and not amp.is_on  # on for the fallback, off after
    assert started["skipped_ms"] >= QUICK.dead_air_s * 1000 - 100  # it waited for the stream
    assert finished["outcome"] == "completed"
    gap, *stalls = finished["gaps"]  # a loaded machine may stall the stream's decoder too
    assert gap["reason"] == UNREACHABLE and gap["offset_ms"] == 0 and gap["length_ms"] > 1_000
    assert all(s["offset_ms"] >= gap["offset_ms"] + gap["length_ms"] for s in stalls)
    missing = sum(g["length_ms"] for g in finished["gaps"])
    assert abs(finished["relayed_ms"] + missing - finished["played_ms"]) < 100
    assert finished["relayed_ms"] > 1_000  # the stream aired once it came
    _, x = rig.recording("vov")
    end = gap["length_ms"] / 1000
    fallback = x[int(0.1 * RATE) : int((end - 0.2) * RATE)]
    assert abs(dominant_hz(fallback) - 660) < 5 and rms_dbfs(fallback) > -20
    after = x[int((end + 0.3) * RATE) :]
    assert len(after) > RATE // 2 and abs(dominant_hz(after) - 440) < 5
    told = [PlayEvent("loa-1", f"e{n}", now_ms(), now_ms(), read_body(t, body))
            for n, (t, body) in enumerate(rig.events.items) if t == "audio.fault"]  # fmt: skip
    alerts = active_alerts([], told, Thresholds(), now_ms())
    alert = alerts[(UNREACHABLE_ALERT, "loa-1")]
    assert "Đài tiếp sóng" in alert.message_vi and "tệp thay thế" in alert.message_vi


def test_an_unreachable_station_without_a_fallback_turns_no_amplifier_on(
    tmp_path: Path, station: Station
) -> None:
    """Stop cleanly: no amplifier, no start, missed; and the alert says what to check."""
    changes: list[bool] = []
    amp = Amplifier(17, preroll_ms=300, hold_s=0.5, pin_factory=MockFactory(),
                    on_change=lambda on, why: changes.append(on))  # fmt: skip
    rig = Rig(tmp_path, relay=QUICK, amplifier=amp)
    station.set("off")
    try:
        rig.player.submit(PlayRequest("vov", "command", 2, 5_000, stream_url=station.url))
        kind, body = rig.events.ended("vov", timeout_s=30)
    finally:
        rig.player.close()
        amp.close()
    assert kind == "play.missed" and body["reason"] == "stream_unreachable"
    assert changes == [] and rig.sink.played() == []
    assert UNREACHABLE not in [f["reason"] for f in rig.events.of("audio.fault", "vov")]
    told = [PlayEvent("loa-1", f"e{n}", now_ms(), now_ms(), read_body(t, b))
            for n, (t, b) in enumerate(rig.events.items) if t == "play.missed"]  # fmt: skip
    alert = active_alerts([], told, Thresholds(), now_ms())[(UNREACHABLE_ALERT, "loa-1")]
    assert alert.details["fallback"] == 0


def test_an_unreadable_fallback_clip_ends_the_relay_as_without_one(
    tmp_path: Path, station: Station
) -> None:
    broken = tmp_path / "hong.wav"
    broken.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    rig = Rig(tmp_path, relay=QUICK)
    station.set("off")
    try:
        request = PlayRequest("vov", "command", 2, 30_000, stream_url=station.url,
                              fallback_path=broken)  # fmt: skip
        rig.player.submit(request)
        finished = rig.events.wait("play.finished", "vov", timeout_s=40)
    finally:
        rig.player.close()
    reasons = [f["reason"] for f in rig.events.of("audio.fault", "vov")]
    assert UNREACHABLE in reasons and "fallback_unreadable" in reasons
    assert finished["outcome"] == "failed" and finished["relayed_ms"] == 0
    assert finished["played_ms"] < 30_000 - 10_000  # stopped, not silence to the end
