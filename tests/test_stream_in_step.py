"""Streams in step: every speaker plays one relayed stream's same sample at the same instant.

The end-to-end test runs the real chain: a loopback station, the controller's
one pull (paced and stamped, controller/radio/stream_source.py), a real
Icecast, two real agents with WAV sinks, the second told seconds after the
first and reaching Icecast through a slow link. Their recordings are lined up
on the sinks' own timestamps (the wall instant of each session's first
sample, then the sample count), not on the test's clock. The pieces below
it: Ogg pages and the epoch tag (protocol/ogg.py), the pacer, where the
speaker's decoder joins a stream, and the relay's keeping to the timeline.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import numpy as np
import pytest

from broadcast.audio.player import Player
from broadcast.audio.relay import StreamRelay
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import WavFileSink
from broadcast.audio.timed_stream import OggFeed
from controller.radio.relay_stations import StationInput
from controller.radio.stream_source import Pacer, TooLate
from controller.radio.streams import opus_ogg_args
from controller.radio.targets import Target
from controller.site.directory import Site
from plumbing.clock import wall_ms
from protocol.events import Body
from protocol.ogg import PageReader, epoch_of, opus_pre_skip, sample_instant_ms, with_epoch
from tests.audio_helpers import sink_timeline, skew_ms
from tests.broadcast_api_helpers import wait_connected
from tests.lossy_link import LossyLink
from tests.stream_helpers import StreamRig
from tests.stream_station import Station as LoopbackStation
from tests.test_station_relays_e2e import play_event

SKEW_MS = 5.0  # each speaker keeps within 2 ms of the timeline (relay.STEP_TOLERANCE_MS)


def _noise_ogg(path: Path, seconds: int = 6) -> bytes:
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi"]
    argv += ["-i", f"anoisesrc=d={seconds}:c=pink:r=48000:a=0.3", *opus_ogg_args("audio")]
    subprocess.run([*argv, "-f", "ogg", str(path)], check=True, timeout=60)
    return path.read_bytes()


def _decode(ogg: bytes) -> np.ndarray:
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-f", "ogg", "-i", "pipe:0"]
    out = subprocess.run([*argv, "-f", "s16le", "-ac", "1", "pipe:1"], input=ogg,
                         capture_output=True, check=True, timeout=60).stdout  # fmt: skip
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def test_pages_read_back_as_written_and_the_epoch_rides_in_the_tags(tmp_path: Path) -> None:
    raw = _noise_ogg(tmp_path / "n.ogg")
    pages = PageReader().feed(b"junk" + raw)
    assert b"".join(p.to_bytes() for p in pages) == raw  # every page found
    rebuilt = [replace(p, raw=b"").to_bytes() for p in pages]
    assert b"".join(rebuilt) == raw  # and written again byte for byte, CRCs and all
    head, tags = pages[0], pages[1]
    assert head.bos and opus_pre_skip(head.packets()[0]) == 312
    assert epoch_of(tags.packets()[0]) is None
    stamped = with_epoch(with_epoch(tags, 1), 1_765_000_000_123)
    assert epoch_of(stamped.packets()[0]) == 1_765_000_000_123  # the earlier one replaced
    again = PageReader().feed(head.to_bytes() + stamped.to_bytes())[1]
    assert again == stamped  # its CRC is right: read back, not skipped
    whole = _decode(raw)
    with_tag = _decode(b"".join(p.to_bytes() for p in [head, stamped, *pages[2:]]))
    assert np.array_equal(whole, with_tag)  # ffmpeg decodes the stamped stream the same
    assert sample_instant_ms(1000, 48_000) == 2000


def test_the_pacer_stamps_the_first_audio_page_as_now_and_holds_what_comes_early(
    tmp_path: Path,
) -> None:
    raw = _noise_ogg(tmp_path / "n.ogg")
    now = [10_000.0]
    out: list[tuple[float, bytes]] = []

    def sleep(s: float) -> None:
        now[0] += s * 1000

    pacer = Pacer(lambda b: out.append((now[0], b)), delay_ms=1000, clock=lambda: now[0],
                  sleep=sleep)  # fmt: skip
    pacer.feed(raw)  # all at once, as a station's burst: it leaves in real time
    pages = PageReader().feed(b"".join(b for _, b in out))
    first = pages[2].granule - 312
    assert pacer.anchor_ms == 10_000 - first / 48
    assert epoch_of(pages[1].packets()[0]) == round(pacer.anchor_ms + 1000)
    sent = [t for t, b in out[1:]]
    assert all(t == pytest.approx(pacer.anchor_ms + (p.granule - 312) / 48)
               for t, p in zip(sent, pages[2:], strict=True))  # fmt: skip
    late = Pacer(lambda b: None, late_ms=500, clock=lambda: now[0], sleep=sleep)
    late.feed(raw[: len(raw) // 3])
    now[0] += 2000  # the input stalls for two seconds
    with pytest.raises(TooLate):
        late.feed(raw[len(raw) // 3 :])


def test_a_pacer_told_to_rejoin_anchors_a_late_input_again_at_its_late_page(
    tmp_path: Path,
) -> None:
    raw = _noise_ogg(tmp_path / "n.ogg")
    now = [50_000.0]
    out: list[bytes] = []
    told: list[float] = []

    def sleep(s: float) -> None:
        now[0] += s * 1000

    pacer = Pacer(out.append, delay_ms=1000, late_ms=400, rejoin=told.append,
                  clock=lambda: now[0], sleep=sleep)  # fmt: skip
    pacer.feed(raw[: len(raw) // 3])
    first = pacer.epoch_ms
    assert first is not None and pacer.rejoins == 0
    now[0] += 2500  # the input stalls, then what it held comes at once
    pacer.feed(raw[len(raw) // 3 :])
    assert pacer.rejoins == 1 and len(told) == 1 and told[0] > 2000
    pages = PageReader().feed(b"".join(out))
    epochs = [epoch_of(p.packets()[0]) for p in pages if p.packets()[0][:8] == b"OpusTags"]
    assert epochs == [first, pacer.epoch_ms]  # the headers again, with the new timeline
    assert pacer.epoch_ms is not None and 2000 < pacer.epoch_ms - first <= 2600
    assert (
        sum(p.bos for p in pages) == 2 and pages[-1].granule == PageReader().feed(raw)[-1].granule
    )


class _Served:
    """Bytes on loopback HTTP, once, as Icecast gives a late listener: headers, then a page."""

    def __init__(self, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "audio/ogg")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ogg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_speaker_joining_mid_stream_knows_the_stream_sample_of_its_first_sample(
    tmp_path: Path,
) -> None:
    raw = _noise_ogg(tmp_path / "n.ogg")
    pages = PageReader().feed(raw)
    head, tags = pages[0], with_epoch(pages[1], 5_000)
    # joined at page 20: what came before it is unknown, so it starts at page 21
    served = _Served(b"".join(p.to_bytes() for p in [head, tags, *pages[20:]]))
    feed = OggFeed("ffmpeg", served.url, authorization="Basic eDp5", gain_db=0.0)
    try:
        deadline = time.monotonic() + 60
        while not feed.eof:
            assert time.monotonic() < deadline, "the feed did not end"
            feed.fill(1 << 22, 1.0)
        assert feed.epoch_ms == 5_000 and feed.first_sample == pages[20].granule
        assert feed.instant_ms() == sample_instant_ms(5_000, pages[20].granule)
        got = np.frombuffer(feed.take(1 << 22), dtype="<i2").astype(np.float64)
    finally:
        feed.close()
        served.server.shutdown()
    whole = _decode(raw)
    start = feed.first_sample
    assert start is not None and len(got) > 48_000
    seg = got[9600 : 9600 + 24_000]  # past the decoder's first packets, which converge

    def at(lag: int) -> np.ndarray:
        return whole[start + 9600 + lag : start + 9600 + lag + 24_000]

    scores = [float(np.dot(seg, at(lag))) for lag in range(-200, 201)]
    assert int(np.argmax(scores)) - 200 == 0  # to the sample: where it says it is
    assert np.corrcoef(seg, at(0))[0, 1] > 0.99
    assert len(got) == len(whole) - start  # to the stream's last sample


def _relay_of(served: _Served, faults: list[str]) -> StreamRelay:
    """A relay of the served mount, connected and its timeline known."""
    relay = StreamRelay(served.url, 3000, authorization="Basic eDp5",
                        on_fault=lambda reason, detail: faults.append(reason))  # fmt: skip
    deadline = time.monotonic() + 60
    while not relay.prefetch(200, 1.0):
        assert time.monotonic() < deadline, relay.last_error
    return relay


def _played(relay: StreamRelay, heard_at: float, ms: float) -> np.ndarray:
    """What the relay gives for ``ms`` when its first sample is heard at ``heard_at``, each
    chunk told where the sink's timeline is, as the player does."""
    out = b""
    while len(out) < ms * 96:
        relay.align(heard_at + len(out) / 96)
        chunk = relay.read(5.0)
        assert chunk is not None
        out += chunk
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def _lag(got: np.ndarray, whole: np.ndarray, at: int) -> int:
    """Where in ``whole`` the stretch of ``got`` from 0.2 s in is, less ``at`` + 0.2 s."""
    seg = got[9600:33_600]
    scores = [float(np.dot(seg, whole[at + 9600 + d : at + 33_600 + d])) for d in range(-480, 481)]
    return int(np.argmax(scores)) - 480


@pytest.mark.parametrize("heard_ms", [-100, 0, 400])
def test_a_relay_gives_silence_up_to_the_streams_instant_and_drops_what_is_past(
    tmp_path: Path, heard_ms: int
) -> None:
    raw = _noise_ogg(tmp_path / "n.ogg")
    pages = PageReader().feed(raw)
    served = _Served(b"".join(p.to_bytes() for p in [pages[0], with_epoch(pages[1], 5_000),
                                                     *pages[20:]]))  # fmt: skip
    faults: list[str] = []
    relay = _relay_of(served, faults)
    first = pages[20].granule  # the stream sample it starts at (page 20 skipped)
    try:
        got = _played(relay, sample_instant_ms(5_000, first) + heard_ms, 1500)
    finally:
        relay.close()
        served.server.shutdown()
    lead = max(0, -heard_ms) * 48
    assert not got[:lead].any() and got[lead : lead + 480].any()  # silence, then the audio
    want = first + max(0, heard_ms) * 48  # due when the first sample is heard
    assert _lag(got[lead:], _decode(raw), want) == 0
    assert faults == []


def test_a_timeline_too_far_from_the_speakers_clock_plays_as_joined(tmp_path: Path) -> None:
    raw = _noise_ogg(tmp_path / "n.ogg")
    pages = PageReader().feed(raw)
    served = _Served(b"".join(p.to_bytes() for p in [pages[0], with_epoch(pages[1], 5_000),
                                                     *pages[20:]]))  # fmt: skip
    faults: list[str] = []
    relay = _relay_of(served, faults)
    try:
        far = sample_instant_ms(5_000, pages[20].granule) + 3_600_000  # an hour off
        got = _played(relay, far, 1000)
    finally:
        relay.close()
        served.server.shutdown()
    assert faults == ["clock"]
    assert _lag(got, _decode(raw), pages[20].granule) == 0  # from where it joined


def test_a_stream_keeps_to_its_timeline_on_a_card_whose_clock_drifts(tmp_path: Path) -> None:
    raw = _noise_ogg(tmp_path / "n.ogg", seconds=40)
    pages = PageReader().feed(raw)
    first = pages[20].granule
    epoch = wall_ms() + 1500 - first / 48  # its first sample is due in 1.5 s
    served = _Served(b"".join(p.to_bytes() for p in [pages[0], with_epoch(pages[1], round(epoch)),
                                                     *pages[20:]]))  # fmt: skip
    ppm = 5000.0  # far more than a card's 20-50: the test's 25 s show it as an hour would
    ends: list[Body] = []
    sink = WavFileSink(tmp_path / "played", drift_ppm=ppm)
    player = Player(sink, on_event=ends.append, drift_window_s=3)
    try:
        player.submit(PlayRequest("relay", "command", 2, 25_000, stream_url=served.url,
                                  stream_auth="Basic eDp5"))  # fmt: skip
        deadline = time.monotonic() + 120
        while not any(b.TYPE in ("play.finished", "play.missed") for b in ends):
            assert time.monotonic() < deadline, "the relay did not end"
            time.sleep(0.2)
    finally:
        player.close()
        served.server.shutdown()
    started, got = sink_timeline(tmp_path / "played")
    whole = _decode(raw)
    per_ms = 48 * (1 - ppm / 1e6)  # the card's real pace: samples per ms of wall clock
    heard = started + 22_000  # near the end: uncorrected, 110 ms off by now
    i, j = round((heard - started) * per_ms), round((heard - epoch) * 48)
    seg, near = got[i : i + 9600], whole[j - 9600 : j + 19_200]
    lag_ms = (int(np.argmax(np.correlate(near, seg, mode="valid"))) - 9600) / 48
    assert abs(lag_ms) < 30, lag_ms  # what it plays then is what is due then, give or take


@pytest.fixture
def rig(tmp_path: Path, site: Site, broker: Any, database_url: str) -> Iterator[StreamRig]:
    r = StreamRig(tmp_path, database_url, site, broker.port)
    state = r.app.state.xaso
    state.fleet.sync_registry()
    wait_connected(state)
    yield r
    r.close()


@pytest.fixture
def vov(tmp_path: Path) -> Iterator[LoopbackStation]:
    (tmp_path / "radio").mkdir()
    s = LoopbackStation(tmp_path / "radio", noise=True)
    s.set("noise")
    yield s
    s.close()


def test_two_speakers_play_one_relay_in_step_though_one_joins_seconds_later(
    rig: StreamRig, fleet: Any, probe: Any, vov: LoopbackStation, tmp_path: Path
) -> None:
    station = rig.app.state.xaso.station
    made = station.stations.create(StationInput(name="VOV1", url=vov.url), by="bt")
    devices = ("loa-1", "loa-2")
    for device in devices:
        fleet.spawn(
            device,
            sections={"speaker": {"sink": "wav", "wav_dir": str(tmp_path / "played" / device)}},
        )
    for device in devices:
        probe.status_is(device, "online")
    stream = station.stations.stream_for(made.id, 60, station.clip_base_url)
    # the late one's link to Icecast holds every chunk 200-400 ms, as a 4G link: joined
    # where it is, it would play that far behind (bench/stream_skew.py "as joined")
    server = urlsplit(rig.streams.url)
    assert server.hostname is not None and server.port is not None
    link = LossyLink(server.hostname, server.port, seed=13, latency_ms=(200.0, 400.0)).start()
    slow = stream.url.replace(server.netloc, f"127.0.0.1:{link.port}")
    keys = {}
    for device, seconds, url in (("loa-1", 30, stream.url), ("loa-2", 22, slow)):
        relay = msgspec.structs.replace(stream, **{"duration_s": seconds, "url": url})
        keys[device] = station.broadcasting.relay_now(
            [Target("device", device)], relay, by="bt", level="normal", label="VOV1",
            approved=True,
        ).id  # fmt: skip
        if device == "loa-1":
            play_event(probe, device, "play.started", keys[device])
            time.sleep(6)  # the second speaker is told seconds later, into the same pull
    try:
        for device in devices:
            body = play_event(probe, device, "play.finished", keys[device], timeout=120)
            assert body["outcome"] == "completed" and body["relayed_ms"] > 15_000, (device, body)
    finally:
        link.close()
    assert link.counts["accepted"] >= 1  # the late one came through its slow link
    assert vov.most_listening == 1  # one pull, one encode: one timeline
    first, late = (sink_timeline(tmp_path / "played" / d) for d in devices)
    assert late[0] - first[0] > 4_000  # it did join later
    for second in (3, 8, 14):  # along the late one's play
        lag, alike = skew_ms(first, late, late[0] + second * 1000)
        assert alike > 0.9, (second, alike)  # the same audio there
        assert abs(lag) <= SKEW_MS, (second, lag)
