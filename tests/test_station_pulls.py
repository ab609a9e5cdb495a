"""One pull per station, end to end: a scheduled relay on three real agents through the
controller's mount of the station.

The controller (uvicorn, its services, SQLite or PostgreSQL) with a real
Icecast (tests/stream_helpers.py), a station on loopback
(tests/stream_station.py), three agents in their own processes on a real
Mosquitto with WAV sinks. The station must see one listener (the controller's
pull) while three speakers relay it; a 10 s drop of the station is a gap in
every speaker's report; and with the controller's pull gone the speakers air
the station from its own URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from controller.radio.relay_stations import StationInput, mount_station
from controller.radio.schedule_entries import EntryInput
from controller.radio.station_pulls import StationPull, Window, due, released, schedule_windows
from controller.radio.streams import StreamServer
from controller.radio.targets import Target
from controller.site.directory import Site
from protocol.commands import ScheduleSet
from tests.audio_helpers import dominant_hz, read_samples
from tests.broadcast_api_helpers import wait_connected
from tests.stream_helpers import StreamRig
from tests.stream_station import Station as LoopbackStation
from tests.test_scheduling import TZ
from tests.test_station_relays_e2e import play_event

SPEAKERS = ("loa-1", "loa-2", "loa-3")
RELAY = {"relay_retry_max_s": 1.5, "relay_dead_air_s": 3}


@pytest.fixture
def rig(tmp_path: Path, site: Site, broker: Any, database_url: str) -> Iterator[StreamRig]:
    r = StreamRig(tmp_path, database_url, site, broker.port)
    state = r.app.state.xaso
    state.fleet.sync_registry()
    state.station.pulls.retry_cap_s = 1.5  # the field's is 5 s: the test waits less
    wait_connected(state)
    yield r
    r.close()


@pytest.fixture
def vov(tmp_path: Path) -> Iterator[LoopbackStation]:
    (tmp_path / "radio").mkdir()
    s = LoopbackStation(tmp_path / "radio")
    yield s
    s.close()


def _spawn(fleet: Any, probe: Any, tmp: Path) -> None:
    for device in SPEAKERS:
        speaker = {"sink": "wav", "wav_dir": str(tmp / "played" / device), **RELAY}
        fleet.spawn(device, sections={"speaker": speaker})
    for device in SPEAKERS:
        probe.status_is(device, "online")


def _schedule(rig: StreamRig, station_id: int, in_s: int, seconds: int) -> str:
    start = (datetime.now(TZ) + timedelta(seconds=in_s)).replace(microsecond=0, tzinfo=None)
    made = rig.app.state.xaso.station.scheduling.create(
        EntryInput(target_kind="group", target_id="all", station_id=station_id,
                   stream_duration_s=seconds, dtstart=start.isoformat(),
                   rrule="FREQ=DAILY;COUNT=1", label="Thời sự VOV"),
        by="bt",
    )  # fmt: skip
    return f"{made.item_id}@{start.isoformat()}"


def _pitch(tmp: Path, device: str) -> float:
    (played,) = [json.loads(x) for x in (tmp / "played" / device / "played.jsonl").open()]
    rate, samples = read_samples(tmp / "played" / device / played["file"])
    return dominant_hz(samples[rate : len(samples) - rate], rate)


def test_three_speakers_relay_a_station_through_one_pull_and_ride_its_drop(
    rig: StreamRig, fleet: Any, probe: Any, vov: LoopbackStation, tmp_path: Path
) -> None:
    station = rig.app.state.xaso.station
    made = station.stations.create(StationInput(name="VOV1", url=vov.url), by="bt")
    stream = station.stations.stream_for(made.id, 60, station.clip_base_url)
    assert stream.device_auth and stream.direct_url == vov.url
    assert mount_station(stream.url) == made.id and stream.url.startswith(rig.streams.url)
    _spawn(fleet, probe, tmp_path)
    key = _schedule(rig, made.id, 25, 40)
    for device in SPEAKERS:
        play_event(probe, device, "play.started", key)
    pull = station.pulls.pulls[made.id]
    vov.reset_most()
    time.sleep(6)  # three speakers on air
    assert vov.listening == 1 and vov.most_listening == 1  # the controller's pull alone
    assert vov.with_credentials == 0  # no device's credentials went to the station
    vov.set("off")  # the station drops for 10 s
    time.sleep(10)
    vov.set("tone")
    finished = {d: play_event(probe, d, "play.finished", key, timeout=120) for d in SPEAKERS}
    for device, body in finished.items():
        assert body["outcome"] == "completed", (device, body)
        dropped = [g for g in body["gaps"] if g["reason"] == "dropped"]
        assert dropped and 5_000 < sum(g["length_ms"] for g in dropped) < 25_000, body
        assert body["relayed_ms"] > 15_000, (device, body)  # before and after the drop
        assert abs(_pitch(tmp_path, device) - 440) < 10
    assert pull.attempts >= 2  # pulled again after the drop
    deadline = time.monotonic() + 30  # the relay over, its pull ends
    while made.id in station.pulls.pulls or vov.listening:
        assert time.monotonic() < deadline, "the pull outlived its relay"
        time.sleep(0.2)
    assert vov.with_credentials == 0


def test_with_the_pull_down_the_speakers_relay_the_station_from_its_own_url(
    rig: StreamRig, fleet: Any, probe: Any, vov: LoopbackStation, tmp_path: Path
) -> None:
    station = rig.app.state.xaso.station
    pulls = station.pulls
    # the controller's pull is down: no station is ever due (the app's loop holds the
    # bound tick, so it is the windows it reads that are emptied)
    pulls.windows = lambda now_ms: []  # type: ignore[method-assign]
    made = station.stations.create(StationInput(name="VOV1", url=vov.url), by="bt")
    _spawn(fleet, probe, tmp_path)
    key = _schedule(rig, made.id, 8, 20)
    for device in SPEAKERS:
        body = play_event(probe, device, "play.finished", key, timeout=120)
        assert body["outcome"] == "completed" and body["relayed_ms"] > 8_000, (device, body)
        assert abs(_pitch(tmp_path, device) - 440) < 10
    assert not pulls.pulls and vov.with_credentials == 0


def test_the_stations_due_are_those_whose_relay_starts_within_the_lead_or_is_on_air() -> None:
    windows = [Window(1, 100_000, 160_000), Window(2, 200_000, 260_000)]
    assert due(windows, 70_000, lead_ms=20_000) == set()
    assert due(windows, 80_000, lead_ms=20_000) == {1}
    assert due(windows, 159_999, lead_ms=20_000) == {1}
    assert due(windows, 185_000, lead_ms=20_000) == {2}
    assert due(windows, 260_000, lead_ms=20_000) == set()
    doc = msgspec.convert({"version": 1, "tz": "Asia/Ho_Chi_Minh", "items": [
            {"id": "vov", "stream": {"url": "http://ice:8000/station-7.ogg", "duration_s": 60},
             "dtstart": "2030-01-07T05:00:00", "rrule": "FREQ=DAILY"},
            {"id": "tinh", "stream": {"url": "http://tinh.example/live.mp3", "duration_s": 60},
             "dtstart": "2030-01-07T05:00:00", "rrule": "FREQ=DAILY"},
        ]}, ScheduleSet)  # fmt: skip
    five = int(datetime(2030, 1, 8, 5, 0, tzinfo=TZ).timestamp() * 1000)
    found = schedule_windows([("xaso/grp/all/schedule", doc)], five - 60_000, five + 1)
    assert found == [Window(7, five, five + 60_000)]  # the other station is not ours
    assert [mount_station(u) for u in ("http://h/station-12.ogg", "http://h/station-012.ogg",
                                       "http://h/live-1.ogg", "http://h/station-x.ogg")] == [
        12, None, None, None]  # fmt: skip


def test_a_relay_now_waits_for_its_mount_and_the_pull_lasts_its_length(
    rig: StreamRig, fleet: Any, probe: Any, vov: LoopbackStation, tmp_path: Path
) -> None:
    station = rig.app.state.xaso.station
    made = station.stations.create(StationInput(name="VOV1", url=vov.url), by="bt")
    _spawn(fleet, probe, tmp_path)
    stream = station.stations.stream_for(made.id, 60, station.clip_base_url)
    stream = msgspec.structs.replace(stream, **{"duration_s": 15})
    info = station.broadcasting.relay_now(
        [Target("group", "all")], stream, by="bt", level="normal", label="VOV1", approved=True
    )
    assert station.pulls.mounted(made.id)  # served before the speakers were told
    for device in SPEAKERS:
        body = play_event(probe, device, "play.finished", info.id, timeout=90)
        assert body["outcome"] == "completed" and body["gaps"] == [], (device, body)
        assert abs(_pitch(tmp_path, device) - 440) < 10
    assert vov.most_listening == 1 and vov.with_credentials == 0


def test_a_stop_ends_a_relay_now_it_cut_on_every_speaker_and_nothing_else() -> None:
    both = frozenset({"loa-1", "loa-2"})
    relay = Window(7, 0, 60_000, both, priority=3)
    scheduled = Window(8, 0, 60_000)  # a schedule's: its end is the schedule's to say
    assert released([relay, scheduled], frozenset({"loa-1"}), 9) == [
        Window(7, 0, 60_000, frozenset({"loa-2"}), 3), scheduled]  # fmt: skip
    assert released([relay, scheduled], both | {"loa-3"}, 9) == [scheduled]
    assert released([relay], both, 2) == [relay]  # a stop below its level leaves it on air


def test_a_relay_now_stopped_early_lets_go_of_its_pull_once_no_speaker_plays_it(
    rig: StreamRig, fleet: Any, probe: Any, vov: LoopbackStation, tmp_path: Path
) -> None:
    station = rig.app.state.xaso.station
    made = station.stations.create(StationInput(name="VOV1", url=vov.url), by="bt")
    _spawn(fleet, probe, tmp_path)
    stream = station.stations.stream_for(made.id, 600, station.clip_base_url)
    info = station.broadcasting.relay_now(
        [Target("group", "all")], stream, by="bt", level="normal", label="VOV1", approved=True
    )
    for device in SPEAKERS:
        play_event(probe, device, "play.started", info.id, timeout=90)
    # one speaker stopped: the others still relay, so the pull goes on
    station.broadcasting.stop([Target("device", "loa-1")], by="bt", level="normal")
    assert play_event(probe, "loa-1", "play.finished", info.id)["outcome"] == "stopped"
    assert made.id in station.pulls.pulls
    # the rest stopped: the station is pulled no more, ten minutes before the relay's end
    station.broadcasting.stop([Target("device", d) for d in SPEAKERS[1:]], by="bt")
    assert station.pulls.pulls == {}
    deadline = time.monotonic() + 60
    while vov.listening:
        assert time.monotonic() < deadline, "the station still has its listener"
        time.sleep(0.1)
    for device in SPEAKERS[1:]:
        assert play_event(probe, device, "play.finished", info.id)["outcome"] == "stopped"


def test_a_pull_without_ffmpeg_keeps_trying_with_backoff_and_stops_when_told() -> None:
    streams = StreamServer("http://127.0.0.1:9", "nguon")
    pull = StationPull(3, "http://127.0.0.1:9/vov.mp3", streams, ffmpeg="/no/such/ffmpeg",
                       retry_base_s=0.05, retry_cap_s=0.1)  # fmt: skip
    deadline = time.monotonic() + 30
    while pull.attempts < 3:
        assert time.monotonic() < deadline, "the pull stopped trying"
        time.sleep(0.05)
    pull.stop()
    assert not pull.on_air.is_set() and not pull._thread.is_alive()
