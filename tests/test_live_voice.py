"""Phát trực tiếp end to end: a fake microphone in Chromium, three real speaker agents.

Chromium's fake capture device plays a WAV file (a sequence of tones) as the
microphone. The broadcaster opens the live page, chooses the commune and
talks; the controller encodes once to an Icecast mount and the agents relay
it into their WAV sinks, their amplifiers on MockFactory pins. The browser
reaches the controller through a TCP link the second test cuts, as a phone
losing its network would.
"""

from __future__ import annotations

import itertools
import json
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect, sync_playwright

from controller.db.auth_tables import AuditEntry
from controller.site.directory import Site
from tests.audio_helpers import skew_ms
from tests.broadcast_api_helpers import PASSWORD, Ctl, wait_connected
from tests.lossy_link import LossyLink
from tests.player_helpers import dominant_hz, samples
from tests.stream_helpers import StreamRig

WAIT_MS = 90_000
SPEAKERS = ("loa-1", "loa-2", "loa-3")
RATE = 48_000
# the "voice": two seconds each of ten tones, in an order no shift of it repeats
TONES_HZ = (400, 700, 1000, 550, 850, 1150, 475, 925, 625, 1075)
TONE_S = 2.0
TALK_MS = 20_000


def voice_wav(path: Path) -> Path:
    t = np.arange(int(TONE_S * RATE)) / RATE
    x = np.concatenate([0.5 * np.sin(2 * np.pi * f * t) for f in TONES_HZ])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture
def rig(tmp_path: Path, site: Site, broker: Any) -> Iterator[StreamRig]:
    r = StreamRig(tmp_path, f"sqlite:///{tmp_path / 'controller.db'}", site, broker.port)
    Ctl(r.app, tmp_path)  # a user per role, named by the role
    state = r.app.state.xaso
    state.fleet.sync_registry()
    wait_connected(state)
    yield r
    r.close()


@pytest.fixture
def link(rig: StreamRig) -> Iterator[LossyLink]:
    """The browser's way to the controller: a TCP link with no faults until told."""
    port = int(rig.base_url.rsplit(":", 1)[1])
    lk = LossyLink("127.0.0.1", port, seed=13, latency_ms=None).start()
    yield lk
    lk.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    mic = voice_wav(tmp_path / "voice.wav")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        expect.set_options(timeout=WAIT_MS)
        yield b
        expect.set_options(timeout=5_000)
        b.close()


@pytest.fixture
def speakers(fleet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    played = {}
    for device in SPEAKERS:
        played[device] = tmp_path / f"played-{device}"
        speaker = {"sink": "wav", "wav_dir": str(played[device]), "amp_pin": 17}
        fleet.spawn(device, sections={"speaker": speaker | {"amp_hold_s": 1.0}})
    return played


def broadcaster(browser: Browser, url: str) -> Page:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.grant_permissions(["microphone"], origin=url)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{url}/login")
    page.fill("input[name=username]", "broadcaster")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()
    page.goto(f"{url}/live-voice")
    return page


def start_talking(page: Page) -> None:
    page.locator("#live-voice input[value='group:all']").check()
    page.select_option("#lv-level", "normal")
    page.click("#lv-talk")
    expect(page.locator("#lv-status")).to_have_text("Đang phát trực tiếp, hãy nói.")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll


def events(probe: Any, device: str, kind: str) -> list[dict[str, Any]]:
    """Every ``kind`` event of ``device`` so far, with the envelope's own ``ts``."""
    found = []
    for m in probe.on(f"xaso/dev/{device}/event"):
        env = m.json()
        if env["type"] == kind:
            found.append({**env["body"], "ts": env["ts"]})
    return found


def wait_events(probe: Any, kind: str, key: str, timeout: float = 60) -> dict[str, dict]:
    """Each speaker's ``kind`` event for broadcast ``key``."""
    out = {}
    for device in SPEAKERS:
        m = probe.wait_for(
            lambda m, d=device: (
                m.topic == f"xaso/dev/{d}/event"
                and m.json()["type"] == kind
                and m.json()["body"].get("key") == key
            ),
            timeout,
        )
        out[device] = {**m.json()["body"], "ts": m.json()["ts"]}
    return out


def wait_amp_off(probe: Any, after_ms: int, timeout: float = 60) -> dict[str, int]:
    out = {}
    for device in SPEAKERS:
        m = probe.wait_for(
            lambda m, d=device: (
                m.topic == f"xaso/dev/{d}/event"
                and m.json()["type"] == "amp.state"
                and m.json()["body"]["on"] is False
                and m.json()["ts"] >= after_ms
            ),
            timeout,
        )
        out[device] = m.json()["ts"]
    return out


def live_broadcast_id(rig: StreamRig) -> str:
    (info,) = [b for b in rig.app.state.xaso.station.broadcasting.recent(10) if b.kind == "stream"]
    return info.id


def audit_actions(rig: StreamRig) -> list[AuditEntry]:
    with rig.app.state.xaso.sessions() as db:
        return list(db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def tone_sequence(x: np.ndarray) -> list[int]:
    """The nearest of TONES_HZ in each middle half of every 2 s stretch of ``x``, aligned
    on the recording's own tone changes."""
    win = int(0.25 * RATE)
    found = [
        min(TONES_HZ, key=lambda f, i=i: abs(f - dominant_hz(x[i : i + win])))
        for i in range(0, len(x) - win, win)
    ]
    runs: list[int] = []
    for f in found:  # tones held for a stretch, not the windows across a change
        if not runs or runs[-1] != f:
            runs.append(f)
    return runs


def assert_voice(x: np.ndarray, min_tones: int) -> None:
    """The recording holds the microphone's tones, in the microphone's cyclic order."""
    seq = tone_sequence(x)
    order = {f: i for i, f in enumerate(TONES_HZ)}
    steady = seq
    assert len(set(steady)) >= min_tones, seq
    follows = sum((order[b] - order[a]) % len(TONES_HZ) == 1 for a, b in itertools.pairwise(steady))
    assert follows >= min_tones - 1, seq


def ended(rig: StreamRig, timeout_s: float = 60) -> list[Any]:
    """The session's end in the audit log, once written: after the recording is kept,
    which a loaded machine may take a while to do after the page says it ended."""
    deadline = time.monotonic() + timeout_s
    while not (found := [a for a in audit_actions(rig) if a.action == "broadcast.live_end"]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return found


def test_a_live_session_from_the_browser_plays_on_three_speakers_and_is_kept(
    rig: StreamRig,
    link: LossyLink,
    browser: Browser,
    speakers: dict[str, Path],
    probe: Any,
) -> None:
    for device in SPEAKERS:
        probe.status_is(device, "online", timeout=60)
    page = broadcaster(browser, f"http://127.0.0.1:{link.port}")
    start_talking(page)
    key = live_broadcast_id(rig)
    started = wait_events(probe, "play.started", key)
    page.wait_for_timeout(TALK_MS)  # the broadcaster talks: the test's scenario, not a wait
    page.click("#lv-stop")
    expect(page.locator("#lv-status")).to_have_text("Đã dừng phát.")
    finished = wait_events(probe, "play.finished", key)
    amp_off = wait_amp_off(probe, min(f["ts"] for f in finished.values()))

    recordings, began = {}, {}
    for device in SPEAKERS:
        amp = events(probe, device, "amp.state")
        on = [a["ts"] for a in amp if a["on"]]
        assert on and min(on) <= started[device]["ts"], amp  # on before the voice
        assert amp_off[device] >= finished[device]["ts"]  # and off after it
        assert amp[-1]["on"] is False
        (entry,) = [e for e in json.loads(_log(speakers[device])) if e["key"] == key]
        recordings[device] = samples(speakers[device] / entry["file"])
        began[device] = entry["started_ms"]
        assert finished[device]["relayed_ms"] > TALK_MS - 4000, finished[device]
    for device, x in recordings.items():
        assert len(x) > (TALK_MS - 4000) / 1000 * RATE, device
        assert_voice(x, min_tones=7)
    # in step: the same voice at the same instant, on the sinks' own timestamps; a 3 s
    # window holds a change of tone, so the match is at one lag only
    first, *others = SPEAKERS
    at = max(began.values()) + 2000
    for device in others:
        for k in range(3):
            a, b = (began[first], recordings[first]), (began[device], recordings[device])
            lag, alike = skew_ms(a, b, at + 4000 * k, window_ms=3000, search_ms=200)
            assert alike > 0.9 and abs(lag) <= 5.0, (device, k, lag, alike)

    clips = rig.app.state.xaso.station.library.clips()
    (kept,) = [c for c in clips if c.title.startswith("Phát trực tiếp")]
    assert TALK_MS - 3000 < kept.duration_ms < TALK_MS + 15_000
    actions = [a.action for a in audit_actions(rig)]
    assert "broadcast.live" in actions and "broadcast.live_end" in actions
    (end,) = ended(rig)
    assert end.details["ended_by"] == "stopped" and end.details["clip"] == kept.sha256


def _log(played: Path) -> str:
    lines = (played / "played.jsonl").read_text(encoding="utf-8").splitlines()
    return "[" + ",".join(lines) + "]"


def test_a_cut_connection_stops_every_speaker_within_five_seconds(
    rig: StreamRig,
    link: LossyLink,
    browser: Browser,
    speakers: dict[str, Path],
    probe: Any,
) -> None:
    for device in SPEAKERS:
        probe.status_is(device, "online", timeout=60)
    page = broadcaster(browser, f"http://127.0.0.1:{link.port}")
    start_talking(page)
    key = live_broadcast_id(rig)
    wait_events(probe, "play.started", key)
    page.wait_for_timeout(4000)  # mid-sentence
    cut_ms = time.time_ns() // 1_000_000
    assert link.drop() >= 1
    link.partition(refuse=True)  # the phone's network is gone: nothing gets through
    finished = wait_events(probe, "play.finished", key)
    amp_off = wait_amp_off(probe, cut_ms)
    for device in SPEAKERS:
        assert finished[device]["ts"] - cut_ms < 5000, finished[device]
        assert events(probe, device, "amp.state")[-1]["on"] is False
        assert amp_off[device] >= finished[device]["ts"]
    expect(page.locator("#lv-status")).to_contain_text("Mất kết nối")
    (end,) = ended(rig)
    assert end.details["ended_by"] in ("disconnected", "silence")
