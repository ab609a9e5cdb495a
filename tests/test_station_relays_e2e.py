"""Station relays end to end: a station from the list relayed on a schedule by three real
agents, through a drop and dead air, into the report and the alerts; and an unreachable
station relayed now, which airs its fallback clip.

The controller's services (tests/test_scheduling.py's harness: scheduling,
broadcasting, ingest into SQLite or PostgreSQL) and the station list; the
agents in their own processes on a real Mosquitto, WAV sinks; the station on
loopback (tests/stream_station.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from controller.db.fleet_tables import EventRecord
from controller.fleet.alert_rules import DEAD_AIR, UNREACHABLE
from controller.fleet.alerts import AlertEngine
from controller.fleet.play_log import play_log
from controller.fleet.reports import proof_of_play
from controller.radio.relay_stations import StationInput, StationList
from controller.radio.schedule_entries import EntryInput
from controller.radio.targets import Target
from controller.web.report_sheets import play_log_sheet
from tests.audio_helpers import dominant_hz, read_samples
from tests.stream_station import Station as LoopbackStation
from tests.test_scheduling import TZ, Station, local_ms, sessions, station

__all__ = ["sessions", "station"]  # the harness's fixtures, imported for pytest

SPEAKERS = ("loa-1", "loa-2", "loa-3")
RELAY = {"relay_retry_max_s": 1.5, "relay_dead_air_s": 3}


@pytest.fixture
def radio(tmp_path: Path) -> Iterator[LoopbackStation]:
    (tmp_path / "radio").mkdir()
    s = LoopbackStation(tmp_path / "radio")
    yield s
    s.close()


def play_event(probe: Any, device: str, kind: str, key: str, timeout: float = 90) -> dict[str, Any]:
    """The body of ``device``'s first ``kind`` event for the play ``key``."""
    msg = probe.wait_for(
        lambda m: (
            m.topic == f"xaso/dev/{device}/event"
            and m.json()["type"] == kind
            and m.json()["body"].get("key") == key
        ),
        timeout,
    )
    body: dict[str, Any] = msg.json()["body"]
    return body


def _spawn(station: Station, probe: Any, devices: tuple[str, ...]) -> None:
    for device in devices:
        played = station.tmp / "played" / device
        speaker = {"sink": "wav", "wav_dir": str(played), **RELAY}
        station.fleet.spawn(device, sections={"speaker": speaker})
    for device in devices:
        probe.status_is(device, "online")


def _stored(station: Station, kind: str, count: int) -> None:
    """Wait until ingest has stored ``count`` events of ``kind`` (what reports read)."""
    deadline = time.monotonic() + 60
    with station.scheduling.sessions() as session:
        while True:
            query = select(func.count()).select_from(EventRecord).where(EventRecord.type == kind)
            if (session.scalar(query) or 0) >= count:
                return
            assert time.monotonic() < deadline, f"fewer than {count} {kind} stored"
            time.sleep(0.2)
            session.rollback()  # see the writer's new rows


def test_a_scheduled_relay_on_three_agents_rides_a_drop_and_reports_dead_air(
    station: Station, probe: Any, radio: LoopbackStation
) -> None:
    stations = StationList(station.scheduling.sessions, station.library)
    fallback = station.tone(660, 1.0)
    vov = stations.create(
        StationInput(name="VOV1", url=radio.url, on_failure="fallback",
                     fallback_sha256=fallback.sha256),
        by="bt",
    )  # fmt: skip
    _spawn(station, probe, SPEAKERS)
    start = (datetime.now(TZ) + timedelta(seconds=12)).replace(microsecond=0, tzinfo=None)
    made = station.scheduling.create(
        EntryInput(target_kind="group", target_id="all", station_id=vov.id,
                   stream_duration_s=40, dtstart=start.isoformat(),
                   rrule="FREQ=DAILY;COUNT=1", label="Thời sự VOV"),
        by="bt",
    )  # fmt: skip
    key = f"{made.item_id}@{start.isoformat()}"
    for device in SPEAKERS:
        play_event(probe, device, "play.started", key)
    radio.set("off")  # the station drops for 10 s
    time.sleep(10)
    answered = radio.requests - radio.refused  # none answered while off
    radio.set("tone")
    for device in SPEAKERS:  # each speaker got it back, and told of the drop once
        assert play_event(probe, device, "audio.fault", key)["reason"] == "stream_dropped"
    # back on air everywhere: each speaker asked again and was answered
    deadline = time.monotonic() + 30
    while radio.requests - radio.refused < answered + len(SPEAKERS):
        assert time.monotonic() < deadline, "the speakers did not come back to the station"
        time.sleep(0.1)
    radio.set("silent")  # dead air: connected, nothing on it
    finished = {d: play_event(probe, d, "play.finished", key, timeout=120) for d in SPEAKERS}
    for device, body in finished.items():
        assert body["outcome"] == "completed", (device, body)
        reasons = [g["reason"] for g in body["gaps"]]
        assert reasons[0] == "dropped" and "dead_air" in reasons, (device, body["gaps"])
        dropped = body["gaps"][0]
        assert 5_000 < dropped["length_ms"] < 10_000 + 1_500 + 3_000, (device, dropped)
        lost = sum(g["length_ms"] for g in body["gaps"])
        assert abs(body["relayed_ms"] + lost - body["played_ms"]) < 100
    # the controller: the gaps in the report, and the dead-air alert for each speaker
    _stored(station, "play.finished", 3)
    planned = local_ms(start.isoformat())
    with station.scheduling.sessions() as session:
        rows = {r.key: r for r in proof_of_play(session, planned - 60_000, planned + 60_000)}
        logged = {r.device_id: r for r in play_log(session, planned - 60_000, planned + 60_000)}
        sheet = play_log_sheet("vi", list(logged.values()))
    for device in SPEAKERS:
        assert rows[device].relay_gaps >= 2 and rows[device].relay_gap_ms > 5_000
        bulletin = logged[device]  # the per-bulletin proof of play: seconds relayed, gaps
        assert bulletin.label == "Thời sự VOV" and bulletin.result == "completed"
        assert bulletin.relayed_ms == round(finished[device]["relayed_ms"])
        assert bulletin.gaps == len(finished[device]["gaps"]) and bulletin.gap_ms > 5_000
    assert sheet.headers[-3:] == [
        "Đã tiếp sóng (phút:giây)", "Số lần gián đoạn", "Thời gian gián đoạn (phút:giây)",
    ]  # fmt: skip
    assert all(row[-2] >= 2 for row in sheet.rows)
    _stored(station, "audio.fault", 6)
    raised = AlertEngine(station.scheduling.sessions).run(int(time.time() * 1000)).raised
    dead = sorted(a.device_id for a in raised if a.kind == DEAD_AIR)
    assert dead == list(SPEAKERS)
    # the fallback clip aired in the dead air, on every speaker
    for device in SPEAKERS:
        (played,) = station.wait_recordings(device, 1)
        rate, samples = read_samples(station.tmp / "played" / device / played["file"])
        gap = next(g for g in finished[device]["gaps"] if g["reason"] == "dead_air")
        begin = (gap["offset_ms"] + 3_000 + 300) * rate // 1000
        end = (gap["offset_ms"] + gap["length_ms"] - 300) * rate // 1000
        assert end - begin > rate // 2, gap
        assert abs(dominant_hz(samples[begin:end], rate) - 660) < 10


def test_an_unreachable_station_relayed_now_airs_its_fallback_and_raises_an_alert(
    station: Station, probe: Any
) -> None:
    stations = StationList(station.scheduling.sessions, station.library)
    fallback = station.tone(660, 1.0)
    gone = stations.create(
        StationInput(name="Đài tỉnh", url="http://127.0.0.1:9/tinh.mp3", level="priority",
                     on_failure="fallback", fallback_sha256=fallback.sha256),
        by="bt",
    )  # fmt: skip
    _spawn(station, probe, ("loa-1",))
    stream = stations.stream_for(gone.id, 12, station.broadcasting.clip_base_url)
    info = station.broadcasting.relay_now(
        [Target("device", "loa-1")], stream, by="bt", level="priority", label="Đài tỉnh"
    )
    fault = play_event(probe, "loa-1", "audio.fault", info.id)
    assert fault["reason"] == "stream_dropped"  # the first attempt, then the fallback
    started = play_event(probe, "loa-1", "play.started", info.id)
    finished = play_event(probe, "loa-1", "play.finished", info.id)
    assert started["priority"] == 5 and finished["outcome"] == "completed"
    (gap,) = finished["gaps"]
    assert gap["reason"] == "unreachable" and finished["relayed_ms"] == 0
    (played,) = station.wait_recordings("loa-1", 1)
    rate, samples = read_samples(station.tmp / "played" / "loa-1" / played["file"])
    assert abs(dominant_hz(samples, rate) - 660) < 10
    _stored(station, "audio.fault", 2)
    raised = AlertEngine(station.scheduling.sessions).run(int(time.time() * 1000)).raised
    (alert,) = [a for a in raised if a.kind == UNREACHABLE]
    assert alert.device_id == "loa-1" and "Đài tiếp sóng" in alert.message_vi
