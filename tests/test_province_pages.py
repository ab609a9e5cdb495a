"""What the province bench (bench/province_pages.py) found, guarded on both databases:
the play log is a commune's own and paged; recent broadcasts, and a page of the calendar,
take the same statements however many broadcasts or other communes' entries there are;
a row names at most ``ACKS_LISTED`` answers; a form's clip list is the newest few, its
own first; a province's picker lists its communes, not their thousands of villages."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from cli.brokers.mosquitto import free_port
from controller.db.broadcast_tables import (
    BroadcastAckRow,
    BroadcastCommuneRow,
    BroadcastRow,
    ClipRow,
    ScheduleRow,
)
from controller.fleet.ingest_writes import Item, write_batch
from controller.fleet.play_log import play_log
from controller.radio.broadcast_reads import DeviceAck
from controller.radio.clip_library import CLIP_CHOICES
from controller.site.directory import Site
from controller.web.paging import ACKS_LISTED, listed_acks
from controller.web.routes import fleet as fleet_routes
from controller.web.routes import reports
from controller.web.routes.reports import LOG_PER_PAGE
from controller.web.routes.targets import province_groups
from protocol.uplink import Event
from tests.broadcast_api_helpers import make_app, refused
from tests.commune_helpers import OWN, Two, add_communes

DAY0 = 1_764_694_800_000  # 03/12/2025 00:00 in Vietnam
MIN = 60_000
PLAYS = {"phu-an": LOG_PER_PAGE + 30, "tan-binh": 3}


@pytest.fixture
def two(tmp_path: Path, database_url: str, site: Site) -> Iterator[Two]:
    add_communes(site)
    app = make_app(tmp_path, database_url, site, free_port())  # no broker: nothing is sent
    yield Two(app, roles=("broadcaster",))
    app.state.xaso.engine.dispose()


def plays(two: Two) -> None:
    """``PLAYS`` plays on each commune's speaker on 03/12/2025, through the ingest's writer."""
    items = []
    for commune, count in PLAYS.items():
        device = OWN[commune]
        for n in range(count):
            planned = DAY0 + 6 * 3_600_000 + n * 5 * MIN
            body = {"key": f"tin-{n}@{commune}", "origin": "schedule", "priority": 2,
                    "planned_ms": planned, "label": f"Bản tin {n}", "item_id": "tin",
                    "actual_ms": planned + 100, "outcome": "completed",
                    "played_ms": 4 * MIN}  # fmt: skip
            at = planned + 4 * MIN
            ev = Event(id=f"{device}-{n}", type="play.finished", ts=at, body=body)
            items.append(Item(device, "event", ev, at))
    with two.app.state.xaso.sessions.begin() as db:
        write_batch(db, items, DAY0)


PERIOD = {"start_ms": DAY0, "end_ms": DAY0 + 86_400_000}
DAY = {"start": "03/12/2025", "end": "03/12/2025"}


def test_the_play_log_is_a_communes_own_and_its_page_has_a_pager(two: Two) -> None:
    plays(two)
    an, binh, province = ("phu-an", "broadcaster"), ("tan-binh", "broadcaster"), (None, "admin")
    for who, commune in ((an, "phu-an"), (binh, "tan-binh")):
        rows = two.call(who, "GET", "/api/reports/log", params=PERIOD).json()
        assert {r["device_id"] for r in rows} == {OWN[commune]}
        assert len(rows) == PLAYS[commune]
    seen = statements(two)
    everything = two.call(province, "GET", "/api/reports/log", params=PERIOD).json()
    assert len(everything) == sum(PLAYS.values())
    late = two.call(
        province, "GET", "/api/reports/log", params=PERIOD | {"offset": 130, "limit": 2}
    )
    assert [r["key"] for r in late.json()] == ["tin-127@phu-an", "tin-128@phu-an"]  # 3 a time first
    assert not [sql for sql in seen if "FROM events" in sql]  # folded at ingest, paged in SQL
    chosen = two.call(province, "GET", "/api/reports/log", params=PERIOD | {"commune": "tan-binh"})
    assert {r["device_id"] for r in chosen.json()} == {OWN["tan-binh"]}
    some = two.call(an, "GET", "/api/reports/log", params=PERIOD | {"offset": 125, "limit": 10})
    assert [r["key"] for r in some.json()] == [f"tin-{n}@phu-an" for n in range(125, 130)]
    refused(two.call(an, "GET", "/api/reports/log", params=PERIOD | {"commune": "tan-binh"}), 403)
    refused(two.call(province, "GET", "/api/reports/log", params=PERIOD | {"commune": "xa-x"}), 422)
    with two.app.state.xaso.sessions() as db:  # the calendar's page of speakers
        shown = play_log(db, *PERIOD.values(), devices=[OWN["tan-binh"]])
    assert [(r.device_id, r.groups) for r in shown] == [
        (OWN["tan-binh"], ("all", "binh-thon-1", "tan-binh"))
    ] * 3
    totals = two.call(binh, "GET", "/api/reports/plays", params=PERIOD).json()
    assert [(r["key"], r["plays"]) for r in totals] == [(OWN["tan-binh"], 3)]

    first = two.call(an, "GET", "/reports/log", params=DAY)
    assert first.status_code == 200
    assert first.text.count("<tr><td>") == LOG_PER_PAGE and OWN["tan-binh"] not in first.text
    assert "Trang 1/2" in first.text and 'rel="next"' in first.text
    second = two.call(an, "GET", "/reports/log", params=DAY | {"page": "2"})
    assert second.text.count("<tr><td>") == PLAYS["phu-an"] - LOG_PER_PAGE
    assert "Bản tin 129" in second.text and "Bản tin 0<" not in second.text
    sheet = two.call(an, "GET", "/reports/log", params=DAY | {"format": "csv"})
    assert len(list(csv.reader(io.StringIO(sheet.text.lstrip("\ufeff"))))) == 1 + PLAYS["phu-an"]
    page = two.call(province, "GET", "/reports/log", params=DAY).text
    assert 'name="commune"' in page and "Xã Tân Bình" in page  # the province chooses one
    assert 'name="commune"' not in first.text  # a commune has only its own
    assert page.count("<tr><td>") == LOG_PER_PAGE and 'id="report-choose"' not in page


def test_a_provinces_log_page_asks_for_a_commune_and_its_files_carry_all(
    two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    plays(two)
    monkeypatch.setattr(reports, "WIDE_MAX", 1)  # two communes, as if hundreds
    province = (None, "admin")
    seen = statements(two)
    page = two.call(province, "GET", "/reports/log", params=DAY).text
    assert 'id="report-choose"' in page and "<tr><td>" not in page
    assert not [sql for sql in seen if "FROM events" in sql]  # nothing read to show nothing
    one = two.call(province, "GET", "/reports/log", params=DAY | {"commune": "tan-binh"}).text
    assert one.count("<tr><td>") == PLAYS["tan-binh"] and 'id="report-choose"' not in one
    by_id = two.call(province, "GET", "/reports/log", params=DAY | {"device": OWN["tan-binh"]})
    assert by_id.text.count("<tr><td>") == PLAYS["tan-binh"]
    sheet = two.call(province, "GET", "/reports/log", params=DAY | {"format": "csv"}).text
    assert len(list(csv.reader(io.StringIO(sheet.lstrip("\ufeff"))))) == 1 + sum(PLAYS.values())


def statements(two: Two) -> list[str]:
    seen: list[str] = []
    event.listen(two.app.state.xaso.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: seen.append(sql))  # fmt: skip
    return seen


def broadcasts(two: Two, count: int, devices: int, t0: int = 10) -> None:
    """``count`` province broadcasts to ``devices`` speakers of Phú An's, each with acks
    from all but the first three (waiting) and the fourth (refused)."""
    ids = [f"loa-an-{k}" for k in range(1, devices + 1)]
    with two.app.state.xaso.sessions.begin() as db:
        for n in range(count):
            bid = f"{t0 + n:032d}"
            db.add(BroadcastRow(id=bid, kind="play", targets=[{"kind": "group", "id": "all"}],
                                level="normal", priority=3, label=f"Tin tỉnh {n}",
                                created_by="tinh", created_ms=t0 + n, status="partial",
                                devices=ids, answered=devices - 3,
                                answered_ok=devices - 4))  # fmt: skip
            db.flush()  # the row before those that refer to it
            db.add(BroadcastCommuneRow(broadcast_id=bid, commune="phu-an"))
            for k, device in enumerate(ids[3:], start=3):
                db.add(BroadcastAckRow(broadcast_id=bid, device=device, ok=k != 3,
                                       error="busy" if k == 3 else None,
                                       acked_ms=t0 + n))  # fmt: skip


def test_recent_broadcasts_take_the_same_statements_for_3_or_30(two: Two) -> None:
    station = two.app.state.xaso.station
    broadcasts(two, 3, 5)
    seen = statements(two)
    assert len(station.broadcasting.recent(50)) == 3 + 2  # and the fixture's two
    few = len(seen)
    broadcasts(two, 27, 5, t0=100)
    seen.clear()
    many = station.broadcasting.recent(50)
    assert len(many) == 30 + 2 and len(seen) == few
    assert [a.device for a in many[0].acks] == [f"loa-an-{k}" for k in range(1, 6)]
    assert [a.ok for a in many[0].acks] == [None, None, None, False, True]


def test_a_commune_picks_its_speakers_out_of_a_province_broadcasts_list_in_sql(two: Two) -> None:
    broadcasts(two, 3, 400)  # Phú An's one registered speaker among 400
    broadcasting = two.app.state.xaso.station.broadcasting
    seen = statements(two)
    mine = [b for b in broadcasting.recent(50, commune="phu-an") if b.commune is None]
    rows = [sql for sql in seen if "FROM broadcasts" in sql and "broadcast_acks" not in sql]
    listed = [sql for sql in rows if "broadcasts.devices" in sql.split("FROM", 1)[0]]
    assert len(mine) == 3 and not listed  # the 400 ids stay in the database
    assert [[(a.device, a.ok) for a in b.acks] for b in mine] == [[(OWN["phu-an"], None)]] * 3
    assert [(b.reached, b.answered_count, b.status) for b in mine] == [(1, 0, "sent")] * 3
    every = [b.id for b in broadcasting.recent(50)]
    assert [b.id for b in broadcasting.recent(2, offset=1)] == every[1:3]


def test_the_broadcasts_api_is_paged_and_counts_the_answers_listed_on_each_one(two: Two) -> None:
    broadcasts(two, 3, 30)
    province = (None, "admin")
    every = [b["id"] for b in two.call(province, "GET", "/api/broadcasts").json()]
    listed = two.call(province, "GET", "/api/broadcasts", params={"limit": 2}).json()
    assert [b["id"] for b in listed] == every[:2] and listed[0]["id"] == f"{12:032d}"
    assert all("acks" not in b for b in listed)
    assert (listed[0]["reached"], listed[0]["answered"], listed[0]["answered_ok"]) == (30, 27, 26)
    rest = two.call(province, "GET", "/api/broadcasts", params={"limit": 2, "offset": 2}).json()
    assert [b["id"] for b in rest] == every[2:4]
    one = two.call(province, "GET", f"/api/broadcasts/{listed[0]['id']}").json()
    assert len(one["acks"]) == 30 and one["acks"][3] | {"ok": False} == one["acks"][3]
    refused(two.call(province, "GET", "/api/broadcasts", params={"limit": 501}), 422)


def test_a_row_names_at_most_a_few_answers_and_counts_the_rest(two: Two) -> None:
    broadcasts(two, 1, ACKS_LISTED + 40)
    html = two.call((None, "admin"), "GET", "/broadcasts").text
    row = html.split('data-id="' + f"{10:032d}", 1)[1].split("</tr>", 1)[0]
    total = ACKS_LISTED + 40  # named: the three waiting and the one refused, what to act on
    assert row.count('class="ack ') == 4 and "loa-an-1 …" in row and "loa-an-4 ✗" in row
    assert f"{total - 4}/{total} cụm loa đã nhận; {total - 4} cụm khác" in row
    assert "loa-an-5 ✓" not in row
    few = two.call(("phu-an", "broadcaster"), "GET", "/broadcasts").text  # its one speaker
    assert few.split('data-id="' + f"{10:032d}", 1)[1].split("</tr>", 1)[0].count("ack-more") == 0


def test_of_many_answers_a_row_names_the_first_few_not_yet_yes() -> None:
    waiting = [DeviceAck(f"loa-{k}", None if k % 2 else True, None, None, None)
               for k in range(3 * ACKS_LISTED)]  # fmt: skip
    shown, more = listed_acks(waiting)
    assert [a.device for a in shown] == [f"loa-{k}" for k in range(1, 2 * ACKS_LISTED, 2)]
    assert more == 2 * ACKS_LISTED
    assert listed_acks(waiting[:ACKS_LISTED]) == (waiting[:ACKS_LISTED], 0)  # a few: all


def clip(db: Any, name: str, commune: str | None, at: int) -> str:
    sha = hashlib.sha256(name.encode()).hexdigest()
    db.add(ClipRow(sha256=sha, title=name, duration_ms=1000, format="mp3", size_bytes=1,
                   source="upload", created_by="x", created_ms=at, commune=commune))  # fmt: skip
    return sha


def test_a_forms_clip_list_is_the_newest_few_its_own_first(two: Two) -> None:
    library = two.app.state.xaso.station.library
    with two.app.state.xaso.sessions.begin() as db:
        province = [clip(db, f"tỉnh {n}", None, n) for n in range(3)]
        commune = [clip(db, f"xã {n}", "phu-an", 100 + n) for n in range(CLIP_CHOICES + 5)]
    offered = [c.sha256 for c in library.choices(None)]
    assert offered[:3] == province[::-1] and len(offered) == CLIP_CHOICES
    assert offered[3:] == commune[::-1][: CLIP_CHOICES - 3]  # then the newest of the rest
    mine = [c.sha256 for c in library.choices("phu-an")]
    assert mine == commune[::-1][:CLIP_CHOICES]
    assert [c.sha256 for c in library.choices("tan-binh")] == province[::-1]
    oldest = commune[0]  # not offered, still named where an entry plays it
    assert library.titles([oldest, province[0]], "phu-an") == {
        oldest: "xã 0",
        province[0]: "tỉnh 0",
    }
    assert library.titles([oldest], "tan-binh") == {}


def test_a_provinces_picker_lists_its_communes_and_finds_their_villages() -> None:
    communes = {f"xa-{n}" for n in range(3)}
    groups = ["all", *sorted(communes), "xa-0-thon-1", "xa-0-thon-2", "xa-1-thon-1"]
    assert province_groups(groups, communes, "") == ["all", "xa-0", "xa-1", "xa-2"]
    assert province_groups(groups, communes, "XA-0-") == [
        "all", "xa-0", "xa-1", "xa-2", "xa-0-thon-1", "xa-0-thon-2"
    ]  # fmt: skip


def test_the_calendar_builds_only_the_documents_of_the_speakers_it_shows(two: Two) -> None:
    """Another commune's entries on many groups cost the shown speaker's calendar nothing,
    nor do its own entries' many clips (read in one statement)."""
    station = two.app.state.xaso.station
    day = (DAY0 + 86_400_000 * 400, DAY0 + 86_400_000 * 401)

    def entries(n: int, commune: str, group: str | None = None) -> None:
        with two.app.state.xaso.sessions.begin() as db:
            for k in range(n):
                sha = clip(db, f"tin {commune} {n} {k}", None, n)
                db.add(ScheduleRow(item_id=f"tin-{commune}-{n}-{k}", target_kind="group",
                                   target_id=group or f"nhom-{n}-{k}", level="normal",
                                   priority=2, rrule="FREQ=DAILY", tz="Asia/Ho_Chi_Minh",
                                   dtstart=f"2025-01-01T06:{k:02d}:00", clip_sha256=sha,
                                   created_by="x", created_ms=1, updated_ms=1,
                                   commune=commune))  # fmt: skip

    seen = statements(two)
    entries(1, "tan-binh")
    entries(1, "phu-an", "an-thon-1")
    seen.clear()
    station.calendar.plans(*day, devices=[OWN["phu-an"]], commune="phu-an")
    few = len(seen)
    entries(30, "tan-binh")
    entries(30, "phu-an", "an-thon-1")
    seen.clear()
    given: list[int] = []  # each target's document is given its own entries, not all 62
    document = station.scheduling.document
    station.scheduling.document = lambda db, t, rows: (
        given.append(len(rows)) or document(db, t, rows=rows)
    )
    (plan,) = station.calendar.plans(*day, devices=[OWN["phu-an"]], commune="phu-an")
    assert len(seen) == few and plan.device == OWN["phu-an"] and len(plan.rows) == 31
    assert given == [31]


def test_the_schedules_api_is_paged(two: Two) -> None:
    with two.app.state.xaso.sessions.begin() as db:
        for k in range(7):
            db.add(ScheduleRow(item_id=f"tin-{k}", target_kind="group", target_id="all",
                               level="normal", priority=2, rrule="FREQ=DAILY",
                               tz="Asia/Ho_Chi_Minh", dtstart="2025-01-01T06:00:00",
                               created_by="x", created_ms=1, updated_ms=1))  # fmt: skip
    province = (None, "admin")
    every = [e["item_id"] for e in two.call(province, "GET", "/api/schedules").json()]
    assert every == [f"tin-{k}" for k in range(7)]
    some = two.call(province, "GET", "/api/schedules", params={"limit": 3, "offset": 2}).json()
    assert [e["item_id"] for e in some] == every[2:5]
    refused(two.call(province, "GET", "/api/schedules", params={"limit": 0}), 422)


def test_the_schedules_page_walks_the_registry_once_per_change_of_it(
    two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the page derives from a province's speakers (the calendar's pages, the
    groups, the search) is kept until devices.json changes, not walked per request."""
    users = ((None, "admin"), ("phu-an", "broadcaster"))
    walks: list[int] = []
    devices = Site.devices
    monkeypatch.setattr(Site, "devices", lambda self: walks.append(1) or devices(self))
    for who in users:
        assert two.call(who, "GET", "/schedules").status_code == 200
    first = len(walks)
    for who in users:
        assert two.call(who, "GET", "/schedules").status_code == 200
    assert 0 < first <= 3 and len(walks) == first  # the speakers, groups, by commune: once


def test_a_provinces_dashboard_lists_its_communes_not_their_villages(
    two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_routes, "GROUPS_LISTED", 1)  # two communes, as if hundreds
    province = (None, "admin")
    page = two.call(province, "GET", "/").text
    assert '<option value="phu-an"' in page and '<option value="tan-binh"' in page
    assert '<option value="all"' in page and '<option value="an-thon-1"' not in page
    chosen = two.call(province, "GET", "/", params={"group": "an-thon-1"}).text
    assert '<option value="an-thon-1" selected>' in chosen
    mine = two.call(("phu-an", "broadcaster"), "GET", "/").text  # a commune's: all of its own
    assert '<option value="an-thon-1"' in mine and '<option value="binh-thon-1"' not in mine
