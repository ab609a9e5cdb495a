"""Bulletins and schedules from above: the poller against the loopback reference server
(real HTTP, real ffmpeg, a real Mosquitto), on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from broadcast.audio.clips import ClipSettings
from controller.app import create_app
from controller.db.broadcast_tables import BulletinRow, DownwardBulletinRow
from controller.db.fleet_tables import UpwardCursor
from controller.fleet import upward_fields as fields
from controller.radio.bulletins import BulletinInbox
from controller.radio.clip_library import ClipLibrary
from controller.radio.downward import (
    CURSOR,
    FIRST_LOOKBACK_MS,
    OVERLAP_MS,
    SOURCE,
    Downward,
    Passing,
    refusals,
)
from controller.radio.targets import Target
from controller.settings import SettingsError, UpwardSection, load_settings
from tests import test_communes_radio as communes_radio
from tests import test_scheduling as harness
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import CHEAP
from tests.commune_helpers import VILLAGE, Two, add_communes
from tests.test_scheduling import Station
from tests.upward_reference import Reference

sessions, station = harness.sessions, harness.station  # the fixtures, shared
two = communes_radio.two
VN = dt.timezone(dt.timedelta(hours=7))
T0 = int(dt.datetime(2027, 3, 3, 6, 0, tzinfo=VN).timestamp() * 1000)


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def at(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, VN).isoformat(timespec="seconds")


def item(bulletin_id: str, created_ms: int, **kw: Any) -> dict[str, Any]:
    """A bulletin as the province lists it (docs/upward.md, "Bulletins from above")."""
    return {
        "BanTinID": bulletin_id,
        "TieuDe": f"Bản tin {bulletin_id}",
        "MucDoUuTien": 1,
        "MaXa": "xa-hoa-binh",
        "ThoiDiemTao": at(created_ms),
        "TepAmThanh": f"/tep/{bulletin_id}.wav",
        "ThoiLuong": 1,
        "LinhVuc": "Nông nghiệp",  # the province's own: left alone
        **kw,
    }


@pytest.fixture
def ref() -> Iterator[Reference]:
    with Reference() as server:
        yield server


@pytest.fixture
def inbox(station: Station) -> BulletinInbox:
    return BulletinInbox(station.library.sessions, station.scheduling, station.broadcasting)


class Rig:
    """A poller over the harness's station, its clock, and the audio the server serves."""

    def __init__(self, station: Station, inbox: BulletinInbox, ref: Reference) -> None:
        self.station, self.inbox, self.ref = station, inbox, ref
        self.sessions = station.library.sessions
        self.clock = Clock(T0)
        self.tones = 0

    def poller(self, library: ClipLibrary | None = None, **kw: Any) -> Downward:
        upward = UpwardSection(
            url=self.ref.url, token=self.ref.token, commune="xa-hoa-binh", timeout_s=2,
            download_timeout_s=5, retry_s=1, retry_max_s=5, **kw,
        )  # fmt: skip
        return Downward(
            self.sessions,
            upward,
            library or self.station.library,
            lambda: self.inbox,
            self.station.site,
            can_send=lambda: self.station.bus.connected,
            clock_ms=self.clock,
        )

    def serve(self, bulletin_id: str, created_ms: int, **kw: Any) -> dict[str, Any]:
        """Its audio, a real WAV tone, at /tep/<id>.wav, and the item in the list."""
        self.tones += 1
        wav = tone_file(self.station.tmp / f"{bulletin_id}.wav", 300 + 40 * self.tones, 0.5)
        self.ref.files[f"{bulletin_id}.wav"] = wav.read_bytes()
        listed = item(bulletin_id, created_ms, **kw)
        self.ref.bulletins.append(listed)
        return listed

    def received(self) -> dict[str, BulletinRow]:
        with self.sessions() as s:
            rows = s.scalars(select(BulletinRow).where(BulletinRow.source == SOURCE)).all()
            return {r.external_id: r for r in rows}

    def refused(self) -> dict[str, DownwardBulletinRow]:
        return {r.key: r for r in refusals(self.sessions)}

    def cursor(self) -> int:
        with self.sessions() as s:
            return s.scalars(select(UpwardCursor.position).where(UpwardCursor.name == CURSOR)).one()


@pytest.fixture
def rig(station: Station, inbox: BulletinInbox, ref: Reference) -> Rig:
    return Rig(station, inbox, ref)


def test_a_normal_bulletin_waits_and_an_emergency_airs_at_once(rig: Rig, probe: Any) -> None:
    rig.serve("BT-01", T0 - 60_000)
    rig.serve("KC-01", T0 - 30_000, MucDoUuTien=3, TieuDe="Cảnh báo bão số 3")
    pulled = rig.poller().poll(rig.clock.ms)
    assert pulled is not None and (pulled.received, pulled.refused) == (2, 0)
    assert rig.ref.refused == []  # every query and every fetch valid, with the token
    asked = rig.ref.asked[0]
    assert asked["MaXa"] == "xa-hoa-binh" and asked["SoLuong"] == "100"
    assert asked["TuThoiDiem"] == at(T0 - FIRST_LOOKBACK_MS - OVERLAP_MS)
    got = rig.received()
    normal, storm = got["BT-01"], got["KC-01"]
    assert (normal.state, normal.level, normal.title) == ("pending", "normal", "Bản tin BT-01")
    assert normal.targets == [{"kind": "group", "id": "all"}] and normal.commune is None
    clip = rig.station.library.get(normal.clip_sha256 or "")
    assert clip.title == "Bản tin BT-01" and 300 <= clip.duration_ms <= 1000  # ffmpeg's
    assert (storm.state, storm.level, storm.decided_by) == ("aired", "emergency", f"auto:{SOURCE}")
    sent = rig.station.broadcasting.get(storm.broadcast_id or "")
    assert sent.priority == 9 and sent.label == "Cảnh báo bão số 3"  # the province's
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/all/cmd")
    assert cmd.json()["id"] == sent.id and cmd.json()["body"]["priority"] == 9
    assert rig.cursor() == T0 - 30_000  # the newest settled


def test_the_same_bulletin_served_twice_is_received_once_and_a_restart_resumes(
    rig: Rig,
) -> None:
    rig.serve("BT-01", T0 - 60_000)
    first = rig.poller()
    first.poll(rig.clock.ms)
    rig.clock.ms += 30_000
    again = first.poll(rig.clock.ms)  # listed again (the overlap): known, not fetched
    assert again is not None and (again.received, again.known) == (0, 1)
    assert rig.ref.fetched == ["/tep/BT-01.wav"] and len(rig.received()) == 1
    cursor = rig.cursor()
    rig.clock.ms += 120_000  # the lease of the poller that stopped runs out
    rig.serve("BT-02", T0 + 60_000)
    restarted = rig.poller()
    pulled = restarted.poll(rig.clock.ms)
    assert pulled is not None and (pulled.received, pulled.known) == (1, 1)
    assert rig.ref.asked[-1]["TuThoiDiem"] == at(cursor - OVERLAP_MS)  # from its cursor
    assert rig.ref.fetched == ["/tep/BT-01.wav", "/tep/BT-02.wav"]
    assert sorted(rig.received()) == ["BT-01", "BT-02"] and rig.cursor() == T0 + 60_000
    assert rig.poller().poll(rig.clock.ms) is None  # the lease: one replica polls at a time


def test_bad_records_are_refused_clearly_and_the_rest_of_the_list_goes_on(
    rig: Rig, tmp_path: Path
) -> None:
    t = T0 - 600_000
    rig.serve("no-title", t, TieuDe="")
    rig.serve("bad-level", t + 1000, MucDoUuTien=7)
    rig.serve("not-audio", t + 2000)
    rig.ref.files["not-audio.wav"] = b"Day khong phai am thanh\n" * 100
    rig.serve("too-big", t + 3000)
    rig.ref.files["too-big.wav"] += b"\0" * 200_000
    rig.serve("no-cluster", t + 4000, DanhSachCumLoa=["loa-9"])
    rig.serve("no-file", t + 5000, TepAmThanh="/tep/missing.wav")
    rig.ref.bulletins.append({"TieuDe": "no id", "MaXa": "xa-hoa-binh", "ThoiDiemTao": "hôm qua"})
    good = rig.serve("good", t + 6000, DanhSachCumLoa=["loa-1", "loa-3"])
    small = ClipLibrary(rig.sessions, rig.station.library.clip_dir,
                        settings=ClipSettings(max_input_bytes=150_000))  # fmt: skip
    poller = rig.poller(library=small)
    pulled = poller.poll(rig.clock.ms)
    assert pulled is not None and (pulled.received, pulled.refused, pulled.retrying) == (1, 7, 0)
    assert rig.received()["good"].targets == [
        {"kind": "device", "id": "loa-1"},
        {"kind": "device", "id": "loa-3"},
    ]
    refused = rig.refused()
    codes = {k: r.code for k, r in refused.items()}
    assert codes == {
        "no-title": "bad_field",
        "bad-level": "bad_field",
        "not-audio": "not_audio",
        "too-big": "too_large",
        "no-cluster": "unknown_target",
        "no-file": "audio_missing",
        next(k for k in refused if k.startswith("sha256:")): "bad_field",
    }
    assert refused["no-title"].reason.startswith("TieuDe: cần chữ")  # Vietnamese, then English
    assert "MucDoUuTien: must be 1, 2 or 3, not 7" in refused["bad-level"].reason
    assert "Tệp quá lớn" in refused["too-big"].reason and refused["too-big"].attempts == 0
    assert all(r.status == "refused" for r in refused.values())
    assert rig.cursor() == int(dt.datetime.fromisoformat(good["ThoiDiemTao"]).timestamp() * 1000)
    fetched = len(rig.ref.fetched)
    rig.clock.ms += 30_000
    again = poller.poll(rig.clock.ms)  # refused for their content: never taken up again
    assert again is not None and (again.refused, again.known) == (0, 8)
    assert len(rig.ref.fetched) == fetched


def test_an_outage_a_hung_server_and_a_failing_file_lose_nothing(rig: Rig) -> None:
    rig.serve("BT-01", T0 - 90_000)
    rig.serve("hung", T0 - 60_000)
    rig.serve("BT-03", T0 - 30_000)
    rig.serve("failing", T0 - 20_000)
    rig.ref.failing["/tep/failing.wav"] = 500
    poller = rig.poller(max_attempts=3)
    rig.ref.down = True
    with pytest.raises(Passing):
        poller.poll(rig.clock.ms)
    for _ in range(4):  # two minutes of outage: each turn logged, asked again after a backoff
        rig.clock.ms += 30_000
        poller.step()
    rig.serve("during", T0 + 60_000)  # made while the server was away
    assert rig.received() == {} and rig.cursor() == T0 - FIRST_LOOKBACK_MS
    assert len(rig.ref.refused) == 5 and rig.ref.asked == []  # five tries, each a 503
    rig.ref.down = False
    rig.ref.hung.add("/tep/hung.wav")
    rig.clock.ms += 30_000
    pulled = poller.poll(rig.clock.ms)
    assert pulled is not None and (pulled.received, pulled.retrying) == (3, 2)
    assert sorted(rig.received()) == ["BT-01", "BT-03", "during"]  # the rest went on
    assert rig.cursor() == T0 - 60_000  # held at the first that may still come
    assert rig.refused()["hung"].status == "retry" and rig.refused()["hung"].attempts == 1
    rig.ref.hung.clear()
    rig.clock.ms += 30_000
    pulled = poller.poll(rig.clock.ms)
    assert pulled is not None and (pulled.received, pulled.retrying) == (1, 1)
    assert "hung" in rig.received() and "hung" not in rig.refused()
    assert rig.cursor() == T0 - 20_000  # held at the failing one, after the others
    rig.clock.ms += 30_000
    pulled = poller.poll(rig.clock.ms)  # its third failure: set aside, the cursor goes on
    assert pulled is not None and pulled.refused == 1
    gave_up = rig.refused()["failing"]
    assert (gave_up.status, gave_up.code, gave_up.attempts) == ("refused", "gave_up", 3)
    assert "HTTP 500" in gave_up.reason and rig.cursor() == T0 + 60_000
    assert sorted(rig.received()) == ["BT-01", "BT-03", "during", "hung"]  # nothing lost


def test_an_emergency_waits_for_the_broker_and_airs_once_it_is_back(
    rig: Rig, station: Station, probe: Any
) -> None:
    rig.serve("KC-01", T0 - 10_000, MucDoUuTien=3)
    up = {"connected": False}
    poller = rig.poller(max_attempts=2)
    poller.can_send = lambda: up["connected"]
    for _ in range(5):  # longer than max_attempts: the controller's wait is not counted
        pulled = poller.poll(rig.clock.ms)
        assert pulled is not None and pulled.retrying == 1 and rig.received() == {}
        rig.clock.ms += 30_000
    assert rig.ref.fetched == [] and rig.refused() == {}  # nothing fetched, nothing refused
    assert rig.cursor() == T0 - 10_000  # held at it
    up["connected"] = True
    rig.clock.ms += 30_000
    poller.poll(rig.clock.ms)
    assert rig.received()["KC-01"].state == "aired"
    probe.wait_for(lambda m: m.topic == "xaso/grp/all/cmd")


def test_a_schedule_from_above_waits_with_its_times_and_accept_uses_them(
    rig: Rig, probe: Any
) -> None:
    tomorrow = (dt.datetime.now(VN) + dt.timedelta(days=1)).date()
    last = tomorrow + dt.timedelta(days=6)
    plan = {"LichPhatID": "LP-77", "ThoiDiemBatDau": f"{tomorrow}T06:30:00+07:00",
            "GioPhat": ["17:00", "06:30"], "NgayKetThuc": str(last)}  # fmt: skip
    rig.serve("BT-05", T0 - 10_000, MucDoUuTien=2, DanhSachCumLoa=["loa-1", "loa-2"], **plan)
    rig.poller().poll(rig.clock.ms)
    row = rig.received()["LichPhat:LP-77"]
    assert (row.state, row.level) == ("pending", "priority")  # a schedule waits, at its level
    assert row.proposed == {
        "dtstart": f"{tomorrow}T06:30:00",
        "times": ["06:30", "17:00"],
        "rrule": "FREQ=DAILY",
        "until": f"{last}T23:59:59",
        "schedule_id": "LP-77",
    }
    accepted = rig.inbox.accept(row.id, by="bt", approved=True)  # no times of its own
    entry = rig.station.scheduling.get(accepted.schedule_id or 0)
    assert (entry.dtstart, entry.times, entry.rrule) == (
        f"{tomorrow}T06:30:00",
        ["06:30", "17:00"],
        "FREQ=DAILY",
    )
    assert entry.until == f"{last}T23:59:59" and entry.level == "priority"
    assert entry.targets == [Target("device", "loa-1"), Target("device", "loa-2")]
    doc = probe.wait_for(lambda m: m.topic == "xaso/dev/loa-2/schedule")
    items = doc.json()["body"]["items"]
    assert len(items) == 2 and items[0]["clip"]["sha256"] == row.clip_sha256


def test_a_provinces_communes_are_asked_by_their_codes_and_each_gets_its_own(
    rig: Rig, station: Station, probe: Any
) -> None:
    """MaXa back to a commune: Phú An by its code in the province's records, Tân Bình by
    its id (no code given), the site's own code the province; a code of no commune of
    ours, from a server that lists every commune's, is refused."""
    add_communes(station.site, station.fleet.broker.port)
    rig.serve("BT-an", T0 - 40_000, MaXa="25123")
    rig.serve("KC-binh", T0 - 30_000, MaXa="tan-binh", MucDoUuTien=3)
    rig.serve("BT-tinh", T0 - 20_000)
    rig.serve("BT-khac", T0 - 10_000, MaXa="99999")
    rig.ref.every_commune = True
    poller = rig.poller(commune_codes={"phu-an": "25123"})
    poller.poll(rig.clock.ms)
    assert set(rig.ref.asked[0]["MaXa"].split(",")) == {"xa-hoa-binh", "25123", "tan-binh"}
    got = rig.received()
    assert (got["BT-an"].commune, got["BT-an"].targets) == (
        "phu-an",
        [{"kind": "group", "id": "phu-an"}],
    )
    assert (
        rig.station.library.get(got["BT-an"].clip_sha256 or "", "phu-an").title == "Bản tin BT-an"
    )
    assert got["KC-binh"].commune == "tan-binh" and got["KC-binh"].state == "aired"
    probe.wait_for(lambda m: m.topic == "xaso/grp/tan-binh/cmd")
    assert got["BT-tinh"].commune is None
    khac = rig.refused()["BT-khac"]
    assert khac.code == "unknown_commune" and "[upward] commune_codes" in khac.reason


def test_the_poller_runs_on_its_own_thread_at_its_interval(rig: Rig) -> None:
    rig.serve("BT-01", int(time.time() * 1000) - 60_000)
    poller = rig.poller(bulletins_every_s=5)
    poller.clock_ms = lambda: int(time.time() * 1000)
    with poller.running():
        deadline = time.monotonic() + 60
        while "BT-01" not in rig.received() and time.monotonic() < deadline:
            time.sleep(0.1)
        rig.serve("BT-02", int(time.time() * 1000))
        while "BT-02" not in rig.received() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert sorted(rig.received()) == ["BT-01", "BT-02"]
    assert 2 <= len(rig.ref.asked) <= 4  # every 5 s, not every second


def test_a_bad_interval_is_refused_clearly(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    config.write_text(
        '[upward]\nurl = "https://tinh.gov.vn"\ntoken = "t"\ncommune = "x"\n'
        "bulletins_every_s = 1\n",
        encoding="utf-8",
    )
    with pytest.raises(SettingsError, match="bulletins_every_s"):
        load_settings(config)


# the parser, fuzzed

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
NAMES = ["BanTinID", "TieuDe", "MucDoUuTien", "MaXa", "ThoiDiemTao", "TepAmThanh",
         "NguonTiepSong", "ThoiLuong", "DanhSachCumLoa", "NgonNgu", "LichPhatID",
         "ThoiDiemBatDau", "GioPhat", "NgayKetThuc"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    base=st.just(item("BT-1", T0)),
    changes=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4),
    dropped=st.sets(st.sampled_from(NAMES), max_size=3),
)
def test_the_parser_takes_a_bulletin_or_names_the_field_never_anything_else(
    base: dict[str, Any], changes: dict[str, Any], dropped: set[str]
) -> None:
    raw = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    try:
        got = fields.incoming(raw)
    except fields.BadBulletin as exc:
        assert exc.field in [*NAMES, "BanTin"] and exc.message_vi and exc.message_en
        return
    assert got.level in ("normal", "priority", "emergency") and got.title and got.bulletin_id
    assert (got.audio_url is None) != (got.stream_url is None)
    assert len(got.external_id) <= fields.MAX_ID
    if got.plan is not None:
        assert dt.datetime.fromisoformat(got.plan.dtstart).tzinfo is None


@given(st.one_of(VALUES, st.lists(VALUES, max_size=3)))
def test_anything_at_all_is_an_item_or_a_clear_refusal(raw: Any) -> None:
    with contextlib.suppress(fields.BadBulletin):  # and nothing else
        fields.incoming(raw)


def test_the_inbox_page_shows_a_schedule_from_above_and_what_was_not_taken(two: Two) -> None:
    """In Vietnamese first: the proposed times with dd/mm/yyyy days and one button to
    accept them; a commune's refusals (and not another's) with the reason in words."""
    station = two.app.state.xaso.station
    proposed = {"dtstart": "2027-03-04T06:30:00", "times": ["06:30", "17:00"],
                "rrule": "FREQ=DAILY", "until": "2027-03-10T23:59:59"}  # fmt: skip
    lich = station.inbox.receive(
        source=SOURCE, external_id="LichPhat:LP-1", title="Lịch tiêm phòng", level="normal",
        targets=[Target("group", VILLAGE["phu-an"])], clip_sha256=communes_radio.CLIPS["phu-an"],
        commune="phu-an", proposed=proposed,
    )  # fmt: skip
    with station.sessions.begin() as s:
        for key, commune, status, reason in (
            ("BT-9", "phu-an", "refused", "TieuDe: cần chữ\nTieuDe: must be text"),
            ("BT-8", "phu-an", "retry", "the audio: HTTP 503"),
            ("BT-7", "tan-binh", "refused", "Tệp quá lớn\nThe file is too large"),
        ):
            s.add(DownwardBulletinRow(key=key, commune=commune, title="", status=status,
                                      code="x", reason=reason, attempts=2, first_ms=T0,
                                      updated_ms=T0, item=None))  # fmt: skip
        s.add(BulletinRow(source=SOURCE, external_id="KC-9", title="Cảnh báo lũ",
                          level="emergency", clip_sha256=communes_radio.CLIPS["phu-an"],
                          lang="vi", targets=[{"kind": "group", "id": VILLAGE["phu-an"]}],
                          received_ms=T0, state="aired", decided_by=f"auto:{SOURCE}",
                          decided_ms=T0, note="", commune="phu-an"))  # fmt: skip
    me = ("phu-an", "broadcaster")
    html = two.call(me, "GET", "/bulletins").text
    assert "Tự động, theo mức ưu tiên" in html and "auto:" not in html  # aired on arrival
    assert "Lịch đề xuất của cấp trên: 06:30, 17:00, mỗi ngày từ 04/03/2027 đến 10/03/2027" in html
    assert "Chấp nhận theo lịch đề xuất" in html
    assert "TieuDe: cần chữ" in html and "đã thử 2 lần" in html and "HTTP 503" not in html
    assert "Tệp quá lớn" not in html  # Tân Bình's
    english = two.call(me, "GET", "/bulletins", params={"lang": "en"}).text
    assert "every day from 04/03/2027 to 10/03/2027" in english and "must be text" in english
    answer = two.call(me, "POST", f"/bulletins/{lich.id}/accept", data={}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    entry = station.scheduling.get(station.inbox.get(lich.id).schedule_id or 0)
    assert (entry.dtstart, entry.times, entry.until) == (
        "2027-03-04T06:30:00",
        ["06:30", "17:00"],
        "2027-03-10T23:59:59",
    )


def test_the_app_pulls_on_its_own_thread_and_an_emergency_airs_once_its_broker_is_up(
    tmp_path: Path, database_url: str, fleet: Any, ref: Reference
) -> None:
    """The composition root (controller/app.py, run_downward): an [upward] url is enough."""
    site, broker, probe = fleet.site, fleet.broker, fleet.probe()
    wav = tone_file(tmp_path / "tin.wav", 440, 0.5).read_bytes()
    ref.files |= {"BT-01.wav": wav, "KC-01.wav": wav}
    now = int(time.time() * 1000)
    ref.bulletins += [item("BT-01", now - 60_000), item("KC-01", now - 30_000, MucDoUuTien=3)]
    config = tmp_path / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{site.dir}"\nclips_dir = "{tmp_path / "clips"}"\n'
        f'[database]\nurl = "{database_url}"\n[mqtt]\nport = {broker.port}\n'
        f'[upward]\nurl = "{ref.url}"\ntoken = "{ref.token}"\ncommune = "xa-hoa-binh"\n'
        "bulletins_every_s = 5\nping_every_s = 3600\n",
        encoding="utf-8",
    )
    app = create_app(load_settings(config))
    state = app.state.xaso
    try:
        with TestClient(app):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with state.sessions() as s:
                    got = {b.external_id: b.state for b in s.scalars(select(BulletinRow))}
                if got == {"BT-01": "pending", "KC-01": "aired"}:
                    break
                time.sleep(0.2)
            assert got == {"BT-01": "pending", "KC-01": "aired"}
            cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/all/cmd")
            assert cmd.json()["body"]["priority"] == 9
    finally:
        state.engine.dispose()
    assert ref.refused == [] and ref.asked[0]["MaXa"] == "xa-hoa-binh"
