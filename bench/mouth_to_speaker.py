"""Mouth to speaker: from a sample entering the browser to the same sample in the speakers' sinks.

Everything real, as tests/test_live_voice.py sets it up: Chromium (Playwright,
/usr/bin/chromium) with a fake microphone, the controller with Icecast
(tests/stream_helpers.py's StreamRig) on a private Mosquitto, ``--speakers``
agents as processes with WAV sinks and MockFactory amplifiers. The
broadcaster logs in, opens "Phát trực tiếp", chooses every speaker, presses
Talk, talks for ``--seconds`` and presses Stop.

The microphone is a file of markers (bench/_markers.py): every 1.5 s a
120 ms tone burst, its pitch naming its slot in a 12 s cycle that Chromium
loops.

- **Entering the browser.** bench/mouth_probe.js, added before the page's
  scripts, wraps ``getUserMedia``: the same stream the page records also
  feeds an AudioWorklet that keeps every sample with its frame number and
  answers pings every 20 ms with the frame it has reached. A frame's wall
  instant is the least ``pong arrival - frame / rate`` of the pings within
  5 s (``FrameClock``): when the audio thread had that sample. That is
  after the sample entered the browser by the capture's buffering (a 10 ms
  capture buffer and one render callback, ``baseLatency``, printed), and the
  pings add their coarseness (printed as the spread): the browser instant is
  late, so the figures are short, by about 10 to 30 ms.
- **Written by the sinks.** A WAV sink logs the wall instant of its first
  sample (``started_ms``) and is paced like a card from it, so sample ``i``
  is written for ``started_ms + i / rate``, the timeline the speaker keeps to.
- **Latency**, per marker per speaker: the sink's onset less the browser's,
  both found by the same detector. Markers the speaker should hold (their
  instant, moved by its median latency, inside its recording) and does not
  are missed. The first second or so of the talk airs nowhere (the speakers
  are told 1.5 s ahead once audio flows), nor does the last (Stop ends the
  speakers at once).
- **Baseline, same run**: a listener on the mount with a speaker's
  credentials, playing each page as it arrives: how soon the audio is on
  Icecast, the rest being the speakers' play-out delay.
- **Breakdown**: MediaRecorder's start to its first chunk (the timeslice);
  from that start to the stream's timeline anchor (the first Ogg page's
  audio, dated by the controller's pacer: ``epoch - PLAYOUT_DELAY_MS``, the
  epoch read from the mount); ``PLAYOUT_DELAY_MS`` itself; and what is left
  (the stream's sample count against the browser's capture, ~0 when no
  sample is lost on the way).

One host, one clock: the browser's ``performance.timeOrigin + now()``, the
sinks' ``time.time_ns()`` and the controller's are the same system clock
(the browser's is checked against this process's, printed). In the field
the speakers' clocks (chrony) add their offset from the controller's, and
the browser's own clock does not matter: the controller dates the stream.

    .venv/bin/python -m bench.mouth_to_speaker --speakers 3 --seconds 45
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import threading
import time
import tomllib
import wave
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import numpy as np
import tomli_w
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bench._markers import FrameClock, Marker, assemble, expected, markers, pair, write_wav
from cli.brokers.mosquitto import Mosquitto, free_port
from controller.radio.live_voice import LiveSession
from controller.radio.stream_source import PLAYOUT_DELAY_MS, Pacer
from controller.site.devices import add_device
from controller.site.directory import Site
from controller.site.keys import init_site
from protocol.ogg import OggError, PageReader, epoch_of, opus_pre_skip
from tests.broadcast_api_helpers import PASSWORD, Ctl, wait_connected
from tests.fleet import AgentProcess, Probe
from tests.stream_helpers import StreamRig, device_credentials

GOAL_MS = 1500
WAIT_MS = 90_000
PROBE_JS = Path(__file__).with_name("mouth_probe.js")
EAR = "loa-ear"  # a device of its own for the listener on the mount, never told to play


def wall_ms() -> float:
    return time.time_ns() / 1e6


@contextmanager
def speakers(work: Path, n: int) -> Iterator[tuple[Site, StreamRig, Probe, dict[str, Path]]]:
    """A site of ``n`` speakers in group ``all``, its broker, the controller with Icecast,
    and the agents, online; each speaker's WAV sink directory."""
    site = init_site(work / "site")
    port = free_port()
    names = [f"loa-{i + 1}" for i in range(n)]
    for device, groups in [*((d, ["all"]) for d in names), (EAR, ["bench-ear"])]:
        add_device(site.dir, device, ["speaker"], groups, broker_host="127.0.0.1",
                   broker_port=port)  # fmt: skip
    os.environ["GPIOZERO_PIN_FACTORY"] = "mock"
    with ExitStack() as stack:
        broker = Mosquitto(work / "broker", port, password_file=site.passwd_path,
                           acl_file=site.acl_path)  # fmt: skip
        broker.start()
        stack.callback(broker.stop)
        rig = StreamRig(work, f"sqlite:///{work / 'controller.db'}", site, port)
        stack.callback(rig.close)
        Ctl(rig.app, work)  # a user per role, named by the role
        rig.app.state.xaso.fleet.sync_registry()
        wait_connected(rig.app.state.xaso)
        probe = Probe("127.0.0.1", port, *site.controller_credentials())
        stack.callback(probe.close)
        sinks = {}
        for device in names:
            sinks[device] = work / f"played-{device}"
            agent = AgentProcess(agent_config(site, work, device, sinks[device]),
                                 work / f"{device}.log").start()  # fmt: skip
            stack.callback(agent.stop)
        for device in names:
            probe.status_is(device, "online", timeout=60)
        yield site, rig, probe, sinks


def agent_config(site: Site, work: Path, device: str, sink: Path) -> Path:
    """The device's generated config with a WAV sink, a mock amplifier, a private state."""
    data = tomllib.loads(site.device_config_path(device).read_text(encoding="utf-8"))
    data["mqtt"].update({"reconnect_min_s": 0.2, "reconnect_max_s": 2.0})
    speaker = {"sink": "wav", "wav_dir": str(sink), "amp_pin": 17, "amp_hold_s": 1.0}
    data.setdefault("speaker", {}).update(speaker)
    data["state"] = {"dir": str(work / "state" / device)}
    path = work / f"{device}.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


class MountEar(threading.Thread):
    """A listener on the mount with a speaker's credentials: each page's arrival, and the
    stream's epoch from its OpusTags."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        super().__init__(name="mount-ear", daemon=True)
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self.request = Request(url, headers={"Authorization": f"Basic {token}"})
        self.epoch_ms: int | None = None
        self.connected_ms = 0.0
        self.pages: list[tuple[float, int]] = []  # arrival, the stream's last sample in it
        self.error = ""

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while not self.pages and time.monotonic() < deadline:  # the mount comes with audio
            self._listen()
            time.sleep(0.05)

    def _listen(self) -> None:
        try:
            with urlopen(self.request, timeout=10) as resp:
                self.connected_ms = wall_ms()
                reader, pre_skip, headers = PageReader(), 0, 0
                while data := resp.read1(4096):
                    now = wall_ms()
                    for page in reader.feed(data):
                        packet = (page.packets() or [b""])[0]
                        if headers == 0:
                            pre_skip = opus_pre_skip(packet)
                        elif headers == 1:
                            self.epoch_ms = epoch_of(packet)
                        elif page.granule >= 0:
                            self.pages.append((now, page.granule - pre_skip))
                        headers += 1
        except (OSError, OggError) as exc:
            self.error = str(exc)

    def arrival_ms(self, sample: float) -> float | None:
        """When the page holding stream sample ``sample`` arrived; None before the
        listener's connect burst was over (those pages came all at once, late)."""
        for at, last in self.pages:
            if last >= sample:
                return at if at > self.connected_ms + 300 else None
        return None


class ControllerTap:
    """Instants inside the controller (it runs in this process), for the breakdown: each
    chunk fed to the live session, its announce, its encoder's first page into the pacer."""

    def __init__(self) -> None:
        self.fed: list[float] = []
        self.announce: tuple[float, float] | None = None
        self.first_out: tuple[float, float] | None = None  # wall instant, the pacer's anchor

    @contextmanager
    def installed(self) -> Iterator[ControllerTap]:
        feed, announce, out = LiveSession.feed, LiveSession.announce, Pacer._out

        def fed(session: LiveSession, chunk: bytes) -> None:
            self.fed.append(wall_ms())
            feed(session, chunk)

        def announced(session: LiveSession) -> Any:
            began = wall_ms()
            try:
                return announce(session)
            finally:
                self.announce = (began, wall_ms())

        def sent(pacer: Pacer, data: bytes) -> None:
            if self.first_out is None and pacer.anchor_ms is not None:  # the headers, at once
                self.first_out = (wall_ms(), pacer.anchor_ms)
            out(pacer, data)

        patched = {(LiveSession, "feed"): fed, (LiveSession, "announce"): announced,
                   (Pacer, "_out"): sent}  # fmt: skip
        originals = {(cls, name): getattr(cls, name) for cls, name in patched}
        for (cls, name), f in patched.items():
            setattr(cls, name, f)
        try:
            yield self
        finally:
            for (cls, name), f in originals.items():
                setattr(cls, name, f)


def broadcaster(browser: Browser, url: str, timeslice_ms: int) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    context.grant_permissions(["microphone"], origin=url)
    override = f"window.__mouthTimeslice = {timeslice_ms};\n" if timeslice_ms else ""
    context.add_init_script(script=override + PROBE_JS.read_text(encoding="utf-8"))
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{url}/login")
    page.fill("input[name=username]", "broadcaster")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()
    page.goto(f"{url}/live-voice")
    return page


def wait_event(probe: Probe, device: str, kind: str, key: str, timeout: float = 60) -> None:
    probe.wait_for(
        lambda m: (
            m.topic == f"xaso/dev/{device}/event"
            and m.json()["type"] == kind
            and m.json()["body"].get("key") == key
        ),
        timeout,
    )


def talk(
    rig: StreamRig, site: Site, probe: Probe, page: Page, *, devices: list[str], seconds: float
) -> tuple[str, MountEar]:
    """Talk for ``seconds`` once every speaker plays; the broadcast's key and the ear."""
    page.locator("#live-voice input[value='group:all']").check()
    page.select_option("#lv-level", "normal")
    page.click("#lv-talk")
    (info,) = wait_stream(rig)
    assert info.stream_url is not None
    ear = MountEar(info.stream_url, device_credentials(site, EAR))
    ear.start()
    for device in devices:
        wait_event(probe, device, "play.started", info.id)
    page.wait_for_timeout(seconds * 1000)  # the broadcaster talks
    page.click("#lv-stop")
    expect(page.locator("#lv-status")).to_have_text("Đã dừng phát.", timeout=WAIT_MS)
    for device in devices:
        wait_event(probe, device, "play.finished", info.id)
    ear.join(30)
    return info.id, ear


def wait_stream(rig: StreamRig, timeout_s: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            b for b in rig.app.state.xaso.station.broadcasting.recent(10) if b.kind == "stream"
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def clock_check(page: Page) -> tuple[float, float]:
    """The browser's wall clock less this process's, and the bound on it (the tightest of
    twenty round trips)."""
    best = (0.0, float("inf"))
    for _ in range(20):
        before = wall_ms()
        theirs = page.evaluate("performance.timeOrigin + performance.now()")
        after = wall_ms()
        if (after - before) / 2 < best[1]:
            best = (theirs - (before + after) / 2, (after - before) / 2)
    return best


def browser_markers(taken: dict[str, Any]) -> tuple[list[Marker], FrameClock]:
    """The markers of the browser's own capture, on the wall clock."""
    rate = float(taken["rate"])
    clock = FrameClock([tuple(p) for p in taken["pings"] if p[0] is not None], rate)
    chunks = [(int(f), np.frombuffer(base64.b64decode(b), dtype="<i2") / 32768)
              for f, b in taken["chunks"]]  # fmt: skip
    first, x = assemble(chunks)
    found = markers(x, round(rate), 0.0)
    return [Marker(clock.wall_ms(first + m.at_ms * rate / 1000), m.slot) for m in found], clock


def sink_markers(sink: Path, key: str) -> tuple[list[Marker], float, float]:
    """A speaker's markers for broadcast ``key``, and its recording's span on the wall clock."""
    log, deadline = sink / "played.jsonl", time.monotonic() + 30
    while True:  # the sink logs its session as it closes, about when the play is reported
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        found = [e for e in map(json.loads, lines) if e["key"] == key]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (played,) = found
    with wave.open(str(sink / played["file"])) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768
    start = float(played["started_ms"])
    return markers(x, rate, start), start, start + len(x) * 1000 / rate


def figures(lags: list[float]) -> str:
    if not lags:
        return f"{'-':>8} {'-':>8} {'-':>8}"
    p50, p99 = np.percentile(lags, [50, 99])
    return f"{p50:8.1f} {p99:8.1f} {max(lags):8.1f}"


def breakdown(taken: dict[str, Any], tap: ControllerTap, recorder_ms: float, anchor: float) -> None:
    """Where the stream's timeline was set: from MediaRecorder's start to the anchor."""
    chunks = [t for kind, t, *_ in taken["recorder"] if kind == "data"]
    print("breakdown, ms:")
    print(f"  MediaRecorder's start -> its first chunk{chunks[0] - recorder_ms:9.1f}"
          f"  (timeslice {taken['recorder'][0][2] or 'none'}; a chunk every "
          f"{np.median(np.diff(chunks)):.1f})")  # fmt: skip
    if tap.fed and tap.first_out is not None:
        out_ms, _ = tap.first_out
        print(f"  + to the controller's encoder{tap.fed[0] - chunks[0]:20.1f}  (the WebSocket)")
        before = sum(t <= out_ms for t in tap.fed)
        print(f"  + to the encoder's first page{out_ms - tap.fed[0]:20.1f}  "
              f"({before} chunks fed by then)")  # fmt: skip
        if tap.announce is not None:
            began, ended = tap.announce
            print(f"      (the speakers told meanwhile: {began - tap.fed[0]:.1f} to "
                  f"{ended - tap.fed[0]:.1f} ms after the first chunk)")  # fmt: skip
        print(f"  - the first page's audio{out_ms - anchor:25.1f}")
    print(f"  = MediaRecorder's start -> the anchor{anchor - recorder_ms:12.1f}")


def report(
    taken: dict[str, Any], sinks: dict[str, Path], key: str, ear: MountEar, *,
    tap: ControllerTap, clock_off: tuple[float, float],
) -> bool:  # fmt: skip
    """Print the figures; True if the goal is met."""
    said, clock = browser_markers(taken)
    starts = [t for kind, t, *_ in taken["recorder"] if kind == "start"]
    chunks = [t for kind, t, *_ in taken["recorder"] if kind == "data"]
    recorder_ms = starts[-1]
    said = [m for m in said if m.at_ms >= recorder_ms]  # before it, nothing was recorded
    head = f"{'speaker':8} {'matched':>7} {'missed':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(f"{head}  {'not aired: head ms':>18} {'tail ms':>7}")
    talked_ms = chunks[-1] - recorder_ms  # the stream's length, about
    every: list[float] = []
    heard: dict[Marker, float] = {}  # a browser marker -> where a speaker had it, on its timeline
    for device, sink in sinks.items():
        found, lo, hi = sink_markers(sink, key)
        pairs = pair(said, found)
        lags = [s.at_ms - b.at_ms for b, s in pairs]
        heard.update({b: s.at_ms for b, s in pairs})
        should = expected(said, lo, hi, float(np.median(lags))) if lags else 0
        line = f"{device:8} {len(pairs):7d} {max(0, should - len(pairs)):6d} {figures(lags)}"
        if ear.epoch_ms is not None:  # the stream's own instants: what it never played
            line += f"  {lo - ear.epoch_ms:18.0f} {talked_ms - (hi - ear.epoch_ms):7.0f}"
        print(line)
        every += lags
    print(f"{'all':8} {len(every):7d} {'':6} {figures(every)}")
    ok = bool(every) and float(np.percentile(every, 99)) <= GOAL_MS
    if ear.epoch_ms is not None:
        arrived = [(ear.arrival_ms((at - ear.epoch_ms) * 48), b) for b, at in heard.items()]
        mount = [a - b.at_ms for a, b in arrived if a is not None]
        print(
            f"{'mount':8} {len(mount):7d} {'':6} {figures(mount)}  (baseline: played as it arrives)"
        )
        anchor = ear.epoch_ms - PLAYOUT_DELAY_MS
        left = [(at - ear.epoch_ms) - (b.at_ms - recorder_ms) for b, at in heard.items()]
        breakdown(taken, tap, recorder_ms, anchor)
        print(f"  + PLAYOUT_DELAY_MS{PLAYOUT_DELAY_MS:31.1f}")
        print(f"  + the stream less the capture{np.median(left):20.1f}  (p50; max {max(left):.1f})")
        print(f"  = mouth to speaker, p50{np.median(every):26.1f}")
    else:
        print(f"mount: no epoch read ({ear.error or 'no OpusTags'})")
    print(f"browser audio thread: {round(taken['rate'])} Hz, baseLatency "
          f"{taken['baseLatency'] * 1000:.1f} ms, ping spread {clock.spread_ms():.1f} ms, "
          f"least round trip {clock.rtt_ms.min():.2f} ms")  # fmt: skip
    print(f"browser clock less the bench's: {clock_off[0]:+.2f} ms (within ±{clock_off[1]:.2f})")
    if taken["errors"]:
        print("probe errors:", taken["errors"])
    print(f"goal p99 <= {GOAL_MS} ms: {'met' if ok else 'MISSED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speakers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--timeslice-ms", type=int, default=0,
                        help="MediaRecorder's timeslice instead of the page's own")  # fmt: skip
    args = parser.parse_args()
    print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="xaso-mouth-") as tmp:
        work = Path(tmp)
        mic = write_wav(work / "markers.wav")
        with (
            ControllerTap().installed() as tap,
            speakers(work, args.speakers) as (site, rig, probe, sinks),
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(
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
            try:
                page = broadcaster(browser, rig.base_url, args.timeslice_ms)
                key, ear = talk(rig, site, probe, page, devices=list(sinks), seconds=args.seconds)
                taken = page.evaluate("window.__mouthTake()")
                clock_off = clock_check(page)
            finally:
                browser.close()
            print(f"mouth to speaker: {args.speakers} speakers, {args.seconds:g} s talked")
            report(taken, sinks, key, ear, tap=tap, clock_off=clock_off)
    print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
