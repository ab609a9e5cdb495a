"""Reporting upward: the adapter against a reference server on loopback that checks every
field, on SQLite and PostgreSQL; an outage of the server, a refused record, two replicas."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import Device, DeviceState, EventRecord, UpwardRecord
from controller.fleet.service import FleetService
from controller.fleet.upward import LAG_MS, Upward
from controller.settings import SettingsError, UpwardSection, load_settings
from tests.upward_reference import Reference

VN = dt.timezone(dt.timedelta(hours=7))
T0 = int(dt.datetime(2027, 3, 3, 6, 0, tzinfo=VN).timestamp() * 1000)
SPEAKERS = ("loa-1", "loa-2")


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with factory.begin() as s:
        for d in (*SPEAKERS, "kiosk-1"):
            s.add(Device(id=d, name=f"Cụm {d}", roles=["kiosk" if "kiosk" in d else "speaker"]))
        s.flush()
        for d in (*SPEAKERS, "kiosk-1"):
            telemetry = {"volume_pct": 80, "network": {"iface": "wwan0", "signal_dbm": -71.4}}
            s.add(
                DeviceState(
                    device_id=d,
                    state="online",
                    changed_ms=0,
                    updated_ms=0,
                    agent="xaso 0.9",
                    cpu_temp_c=48.5,
                    disk_free_pct=60.0,
                    telemetry=telemetry,
                )
            )
    yield factory
    engine.dispose()


def settings(ref: Reference, **kw: Any) -> UpwardSection:
    return UpwardSection(
        url=ref.url, token=ref.token, commune="xa-hoa-binh", retry_s=5, retry_max_s=60, **kw
    )


_seq = iter(range(1, 10**9))


def record(sessions: sessionmaker[Session], device: str, type_: str, at: int, **body: Any) -> None:
    with sessions.begin() as s:
        s.add(
            EventRecord(
                device_id=device,
                event_id=f"e{next(_seq)}",
                type=type_,
                ts_ms=at,
                received_ms=at,
                body=body,
            )
        )


def finished(key: str, at: int, played_ms: int, **kw: Any) -> dict[str, Any]:
    item = key.split("@", maxsplit=1)[0]
    return {"key": key, "origin": "schedule", "priority": 2, "planned_ms": at, "actual_ms": at,
            "label": "Bản tin sáng", "item_id": item, "outcome": "completed",
            "played_ms": played_ms, **kw}  # fmt: skip


def test_nothing_is_lost_across_a_ten_minute_outage_and_every_field_is_valid(sessions):
    clock = Clock(T0)
    slots = set()
    with Reference() as ref:
        up = Upward(sessions, settings(ref), clock, rand=lambda: 1.0)
        for step_s in range(0, 25 * 60, 5):  # 25 minutes, the server down from 5 to 15
            clock.ms = now = T0 + step_s * 1000
            ref.down = 5 * 60 <= step_s < 15 * 60
            if step_s % 30 == 0:
                for d in SPEAKERS:
                    key = f"ban-tin-{step_s}@2027-03-03T06:00:00"
                    record(sessions, d, "play.finished", now, **finished(key, now, 30_000))
            up.produce(now)
            up.send_due(now)
            slots.add(now // 60_000)
        clock.ms += LAG_MS  # the last plays are read a moment after they came
        up._plays(clock.ms)
        for _ in range(50):  # the backlog goes out
            clock.ms += 60_000
            if up.send_due(clock.ms) == 0 and not owed(sessions):
                break
        assert not owed(sessions)
        pings, plays = ref.of("ping"), ref.of("play")
        assert {why for status, why in ref.refused} == {"down"}  # never a field refused
        assert all(status == 503 for status, _ in ref.refused)
    for d in SPEAKERS:
        mine = [p.body for p in pings if p.body["CumLoaID"] == d]
        times = [p["ThoiGian"] for p in mine]
        assert len(mine) == len(slots) == 25 and times == sorted(set(times))  # each once, in order
        assert mine[0]["TrangThaiHoatDong"] == 1 and mine[0]["AmLuong"] == 80
        assert mine[0]["TrangThaiKetNoi"] == "wwan0,-71dBm" and mine[0]["DungLuongDaDung"] == 40.0
        assert mine[0]["TenCumLoa"] == f"Cụm {d}" and mine[0]["MaXa"] == "xa-hoa-binh"
    assert not [p for p in pings if p.body["CumLoaID"] == "kiosk-1"]  # a kiosk is no cluster
    assert len(plays) == 2 * 50 and len({p.key for p in plays}) == 100  # one per play
    assert {p.body["NhatKyID"] for p in plays} == {
        f"{d}/ban-tin-{s}@2027-03-03T06:00:00" for d in SPEAKERS for s in range(0, 1500, 30)
    }
    first = plays[0].body
    assert (first["KetQua"], first["ThoiLuong"], first["MucDoUuTien"]) == ("HoanThanh", 30, 1)
    assert first["ThoiDiemBatDau"] == "2027-03-03T06:00:00+07:00"
    assert first["LoaiBanTin"] == "LichPhat" and first["TiepSong"] is False


def owed(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as s:
        return list(s.scalars(select(UpwardRecord.id).where(UpwardRecord.status == "pending")))


def test_a_play_is_logged_once_as_it_ended_cut_resumed_missed_or_cut_off(sessions):
    clock = Clock(T0)
    at = T0 - 60_000
    cut = finished("x@1", at, 20_000, outcome="preempted", resumes=True)
    rest = finished("x@1", at, 40_000, resumed_from_ms=20_000, actual_ms=at + 45_000)
    record(sessions, "loa-1", "play.started", at, **{k: cut[k] for k in cut if k not in
           ("outcome", "played_ms", "resumes")})  # fmt: skip
    record(sessions, "loa-1", "play.finished", at + 20_000, **cut)
    record(sessions, "loa-1", "play.finished", at + 85_000, **rest)
    record(sessions, "loa-2", "play.missed", at, key="khan@1", origin="command", priority=9,
           label="Bão số 3", reason="quiet_hours")  # fmt: skip
    record(sessions, "loa-2", "play.interrupted", at, key="y@1", origin="schedule", priority=5,
           planned_ms=at, actual_ms=at, label="Tin ưu tiên", played_ms=12_400,
           checkpoint_ms=at + 12_000, reason="power_loss")  # fmt: skip
    record(sessions, "loa-2", "play.finished", at, what="not a play's body")  # kept, not sent
    record(sessions, "kiosk-1", "ticket.issued", at, number="A001")
    clock.ms = at + 85_000 + LAG_MS  # every record of these plays is in
    with Reference() as ref:
        up = Upward(sessions, settings(ref), clock)
        up.produce(clock.ms)
        up.send_due(clock.ms)
        up.produce(clock.ms)  # nothing new: nothing queued twice
        up.send_due(clock.ms)
        plays = {p.body["NhatKyID"]: p.body for p in ref.of("play")}
        assert ref.refused == []
    assert set(plays) == {"loa-1/x@1", "loa-2/khan@1", "loa-2/y@1"}
    resumed = plays["loa-1/x@1"]
    assert (resumed["KetQua"], resumed["ThoiLuong"]) == ("HoanThanh", 60)  # both parts
    assert resumed["ThoiDiemBatDau"] == "2027-03-03T05:59:00+07:00"  # its first part's start
    missed = plays["loa-2/khan@1"]
    assert (missed["KetQua"], missed["LyDo"], missed["MucDoUuTien"]) == (
        "KhongPhat",
        "quiet_hours",
        3,
    )
    assert missed["ThoiDiemBatDau"] is None and missed["LoaiBanTin"] == "PhatNgay"
    cut_off = plays["loa-2/y@1"]
    assert (cut_off["KetQua"], cut_off["ThoiLuong"], cut_off["MucDoUuTien"]) == (
        "BiGianDoan",
        12,
        2,
    )


def test_a_record_the_province_keeps_refusing_is_set_aside_and_the_rest_go_on(sessions):
    with sessions.begin() as s:
        state = s.get(DeviceState, "loa-2")
        assert state is not None
        state.cpu_temp_c = 400.0  # a broken sensor: the reference refuses NhietDo
    clock = Clock(T0)
    with Reference() as ref:
        up = Upward(sessions, settings(ref, max_attempts=3), clock, rand=lambda: 0.0)
        up.produce(clock.ms)
        for _ in range(10):
            clock.ms += 10_000
            up.send_due(clock.ms)
        assert [p.body["CumLoaID"] for p in ref.of("ping")] == ["loa-1"]
        assert [status for status, _ in ref.refused] == [400, 400, 400]
        assert "invalid NhietDo=400.0" in ref.refused[0][1]
        clock.ms = T0 + 60_000  # the next interval: loa-1 still goes, loa-2 is refused again
        up.produce(clock.ms)
        up.send_due(clock.ms)
        assert [p.body["CumLoaID"] for p in ref.of("ping")] == ["loa-1", "loa-1"]
    with sessions() as s:
        failed = s.scalars(select(UpwardRecord).where(UpwardRecord.status == "failed")).all()
        assert [r.payload["CumLoaID"] for r in failed] == ["loa-2"]
        assert failed[0].attempts == 3 and "HTTP 400" in (failed[0].last_error or "")


def test_two_replicas_send_each_record_once(sessions):
    clock = Clock(T0)
    for d in SPEAKERS:
        record(sessions, d, "play.finished", T0 - 60_000, **finished("z@1", T0 - 60_000, 5_000))
    with Reference() as ref:
        replicas = [Upward(sessions, settings(ref), clock) for _ in range(2)]
        for minute in range(5):
            clock.ms = T0 + minute * 60_000
            for up in replicas:
                up.produce(clock.ms)
            for up in replicas:
                up.send_due(clock.ms)
        keys = [t.key for t in ref.taken]
    assert len(keys) == len(set(keys)) == 5 * 2 + 2  # five intervals' pings, two plays


def test_a_wrong_token_is_refused_and_retried_not_lost(sessions):
    clock = Clock(T0)
    with Reference() as ref:
        up = Upward(sessions, msgspec.structs.replace(settings(ref), token="sai"), clock)
        up.produce(clock.ms)
        up.send_due(clock.ms)
        assert ref.taken == [] and ref.refused == [(401, "token")]
        assert len(owed(sessions)) == 2  # kept, to go once the token is fixed


OK = 'url = "https://tinh.gov.vn"\ntoken = "t"\ncommune = "x"'


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ('url = "ftp://tinh.gov.vn"\ntoken = "t"\ncommune = "x"', "http:// or https://"),
        ('url = "https://tinh.gov.vn"', "token and the commune"),
        (f"{OK}\nping_every_s = 1", "ping_every_s"),
        (f"{OK}\nretry_s = 60\nretry_max_s = 5", "retry_max_s"),
    ],
)  # fmt: skip
def test_a_bad_upward_section_is_refused_clearly(tmp_path: Path, section: str, says: str):
    config = tmp_path / "controller.toml"
    config.write_text(f"[upward]\n{section}\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=says):
        load_settings(config)


def test_the_controller_reports_upward_on_its_own_thread(tmp_path: Path, database_url, sessions):
    with Reference() as ref:
        config = tmp_path / "controller.toml"
        config.write_text(
            f'[database]\nurl = "{database_url}"\n[site]\ndir = "no-site"\n'
            f'[upward]\nurl = "{ref.url}"\ntoken = "{ref.token}"\ncommune = "xa-1"\n'
            "ping_every_s = 5\n",
            encoding="utf-8",
        )
        service = FleetService(load_settings(config), sessions, time.time)
        with service.running():
            deadline = time.monotonic() + 60
            while len(ref.of("ping")) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert {p.body["CumLoaID"] for p in ref.of("ping")} == set(SPEAKERS)


def test_each_ping_and_play_log_carries_its_clusters_commune(sessions):
    """A province's controller: loa-1 is Phú An's (a code of its own in the province's
    records), loa-2 Tân Bình's (none given: its id), the new loa-3 the province's own."""
    with sessions.begin() as s:
        s.get(Device, "loa-1").commune = "phu-an"
        s.get(Device, "loa-2").commune = "tan-binh"
        s.add(Device(id="loa-3", name="Cụm tỉnh", roles=["speaker"]))
    clock = Clock(T0)
    with Reference() as ref:
        up = Upward(sessions, settings(ref, commune_codes={"phu-an": "25123"}), clock)
        for d in ("loa-1", "loa-2", "loa-3"):
            record(sessions, d, "play.finished", T0, **finished(f"tin-{d}@x", T0, 10_000))
        clock.ms = T0 + LAG_MS
        assert up.produce(clock.ms) == 3 + 3
        assert up.send_due(clock.ms) == 6
        assert not ref.refused  # every field valid
        pings, plays = ref.of("ping"), ref.of("play")
    expected = {"loa-1": "25123", "loa-2": "tan-binh", "loa-3": "xa-hoa-binh"}
    assert {p.body["CumLoaID"]: p.body["MaXa"] for p in pings} == expected
    assert {p.body["CumLoaID"]: p.body["MaXa"] for p in plays} == expected
