"""One schedule entry with several times of day and several groups, on both databases.

"Weekdays at 06:30 and 17:00 for thôn 1 and thôn 2" is one entry: the real app
(create_app) against a real Mosquitto signs one retained document per group,
each with an item per time, and real agents of both groups accept them. An
edit that drops a group empties that group's document; bad times and targets
are refused in Vietnamese; the migration keeps existing entries as they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from controller.db.broadcast_tables import ScheduleRow
from controller.db.engine import alembic_config, make_engine, session_factory, upgrade
from controller.fleet.ingest_writes import Item, write_batch
from controller.fleet.play_log import play_log
from controller.radio.schedule_entries import MAX_TIMES, Entry
from controller.radio.targets import Target
from controller.site.directory import Site
from protocol.envelope import open_envelope
from protocol.signing import Keyring
from protocol.uplink import Event
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import Ctl, make_app, refused
from tests.conftest import Fleet
from tests.test_scheduling import TZ, local_ms

WEEKDAYS = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
THON = [{"kind": "group", "id": "thon-1"}, {"kind": "group", "id": "thon-2"}]


@pytest.fixture
def app(tmp_path: Path, database_url: str, site: Site, broker: Any) -> Iterator[Ctl]:
    """The app with its lifespan running, its station connected to the test's Mosquitto."""
    made = make_app(tmp_path, database_url, site, broker.port)
    ctl = Ctl(made, tmp_path)
    with ctl.client:
        deadline = time.monotonic() + 30
        while not ctl.station.connected:
            assert time.monotonic() < deadline, "the station did not connect"
            time.sleep(0.05)
        yield ctl
    made.state.xaso.engine.dispose()


def _clip(app: Ctl) -> str:
    made = app.upload("broadcaster", tone_file(app.tmp / "t.wav", 440, 1.0), "Bản tin")
    assert made.status_code == 201, made.text
    sha: str = made.json()["sha256"]
    return sha


def _body(clip: str, **kw: Any) -> dict[str, Any]:
    return {"targets": THON, "times": ["17:00", "06:30"], "clip_sha256": clip,
            "dtstart": "2030-01-07T00:00:00", "rrule": WEEKDAYS, "label": "Bản tin thôn",
            **kw}  # fmt: skip


def _document(fleet: Fleet, group: str, version_above: int = 0) -> tuple[Any, Any]:
    """The retained schedule document of ``group`` above a version, signed by the site's
    key, as a fresh subscriber gets it: its envelope and its body."""
    topic = f"xaso/grp/{group}/schedule"
    found = fleet.probe().wait_for(
        lambda m: m.topic == topic and json.loads(m.payload)["body"]["version"] > version_above
    )
    keys = Keyring.from_mapping(fleet.site.trusted_keys())
    opened = open_envelope(found.payload, keys, int(time.time() * 1000))
    return opened.envelope, opened.body


def test_one_entry_with_two_times_reaches_both_groups_speakers_and_an_edit_drops_a_group(
    app: Ctl, fleet: Fleet
) -> None:
    clip = _clip(app)
    for device in ("loa-1", "loa-2"):  # thon-1, thon-2
        fleet.spawn(device, sections={"speaker": {"sink": "wav", "wav_dir": str(fleet.tmp)}})
    watch = fleet.probe()
    for device in ("loa-1", "loa-2"):
        watch.status_is(device, "online")
    made = app.call("broadcaster", "POST", "/api/schedules", json=_body(clip))
    assert made.status_code == 201, made.text
    e = made.json()
    assert e["times"] == ["06:30", "17:00"] and e["targets"] == THON and e["target"] == THON[0]
    item = e["item_id"]
    seen: dict[str, int] = {}
    for group, device in (("thon-1", "loa-1"), ("thon-2", "loa-2")):
        envelope, body = _document(fleet, group)
        assert [(i.id, i.dtstart, i.rrule) for i in body.items] == [
            (f"{item}-0630", "2030-01-07T06:30:00", WEEKDAYS),
            (f"{item}-1700", "2030-01-07T17:00:00", WEEKDAYS),
        ]
        assert {i.label for i in body.items} == {"Bản tin thôn"}
        ack = watch.ack_for(device, envelope.id)  # the group's speaker took both items
        assert ack["ok"] and ack["result"] == {"version": envelope.version}
        seen[group] = envelope.version
    # the calendar shows each time on each group's speaker
    day = app.call("officer", "GET", "/api/calendar", params={"start": "2030-01-07"}).json()
    starts = {p["device"]: sorted(r["key"] for r in p["rows"]) for p in day}
    for device in ("loa-1", "loa-2", "loa-3"):
        assert starts[device] == [f"{item}-0630@2030-01-07T06:30:00",
                                  f"{item}-1700@2030-01-07T17:00:00"]  # fmt: skip

    # an edit: thôn 1 only, 06:30 only; thôn 2's document is sent again, empty
    one = _body(clip, targets=THON[:1], times=["06:30"], item_id=item)
    edited = app.call("broadcaster", "PUT", f"/api/schedules/{e['id']}", json=one)
    assert edited.status_code == 200, edited.text
    assert edited.json()["targets"] == THON[:1] and edited.json()["version"] == 2
    envelope, body = _document(fleet, "thon-1", seen["thon-1"])
    assert [i.id for i in body.items] == [f"{item}-0630"]
    assert watch.ack_for("loa-1", envelope.id)["ok"]
    envelope, body = _document(fleet, "thon-2", seen["thon-2"])
    assert body.items == []
    assert watch.ack_for("loa-2", envelope.id)["ok"]
    seen = {"thon-1": _document(fleet, "thon-1")[0].version}

    # deleting it empties every document it was in
    assert app.call("broadcaster", "DELETE", f"/api/schedules/{e['id']}").status_code == 200
    assert _document(fleet, "thon-1", seen["thon-1"])[1].items == []
    audit = [(a.action, a.target) for a in app.audit() if a.action.startswith("schedule.")]
    assert audit == [("schedule.create", "group:thon-1"), ("schedule.update", "group:thon-1"),
                     ("schedule.delete", "group:thon-1")]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "code", "vietnamese"),
    [
        ({"times": ["06:30", "06:30"]}, "duplicate_time", "Giờ phát 06:30 được nhập hai lần"),
        ({"times": ["25:00"]}, "bad_time", "Giờ phát «25:00» không hợp lệ"),
        ({"times": ["6h30"]}, "bad_time", "ghi theo 24 giờ, từ 00:00 đến 23:59"),
        ({"times": [f"{h:02d}:00" for h in range(MAX_TIMES + 1)]}, "too_many_times",
         f"tối đa {MAX_TIMES} giờ một mục"),
        ({"targets": [*THON, {"kind": "group", "id": "thon-9"}]}, "unknown_target",
         "Không có nhóm loa 'thon-9'"),
        ({"targets": []}, "no_target", "Chọn ít nhất một nơi phát"),
        ({"item_id": "m" * 44}, "item_id_too_long", "quá dài cho một mục có giờ phát"),
        ({"targets": [{"kind": "device", "id": f"loa-{n}"} for n in range(51)]},
         "too_many_targets", "tối đa 50 nơi"),
    ],
)  # fmt: skip
def test_bad_times_and_targets_are_refused_in_vietnamese_and_nothing_is_kept(
    app: Ctl, change: dict[str, Any], code: str, vietnamese: str
) -> None:
    clip = _clip(app)
    body = refused(app.call("broadcaster", "POST", "/api/schedules", json=_body(clip, **change)),
                   422)  # fmt: skip
    assert body["code"].endswith(code) and vietnamese in body["vi"], body
    assert app.call("broadcaster", "GET", "/api/schedules").json() == []
    preview = app.call("broadcaster", "POST", "/api/schedules/preview",
                       json={"entry": _body(clip, **change), "start": "2030-01-07"})  # fmt: skip
    assert refused(preview, 422)["vi"] == body["vi"]


def test_the_form_refuses_no_time_and_a_bad_day_in_vietnamese_and_keeps_what_was_typed(
    app: Ctl,
) -> None:
    clip = _clip(app)
    form = {"target": ["group:thon-1", "group:thon-2"], "clip": clip, "from_day": "07/01/2030",
            "times": "", "repeat": "weekdays", "label": "Bản tin thôn"}  # fmt: skip
    token = app.tokens["broadcaster"]
    headers = {"Authorization": f"Bearer {token}"}
    page = app.client.post("/schedules", data=form, headers=headers)
    assert page.status_code == 422, page.text
    assert "Nhập ít nhất một giờ phát" in page.text and "Bản tin thôn" in page.text
    page = app.client.post("/schedules", data={**form, "times": "06:30", "from_day": "31/02/2030"},
                           headers=headers)  # fmt: skip
    assert page.status_code == 422 and "Ngày bắt đầu «31/02/2030» không hợp lệ" in page.text
    assert 'value="group:thon-2" checked' in page.text  # the ticks are kept
    page = app.client.post("/schedules", data={**form, "times": "06:30, 17:00"}, headers=headers,
                           follow_redirects=False)  # fmt: skip
    assert page.status_code == 303, page.text
    (e,) = app.call("broadcaster", "GET", "/api/schedules").json()
    assert e["times"] == ["06:30", "17:00"] and e["targets"] == THON and e["rrule"] == WEEKDAYS


def test_broadcast_0003_keeps_existing_entries_and_downgrades_to_the_first_time(
    database_url: str,
) -> None:
    command.upgrade(alembic_config(database_url), "broadcast_0002")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO schedules (item_id, target_kind, target_id, label, level, priority,"
                " rrule, tz, dtstart, exdates, gain_db, lang, enabled, version, created_by,"
                " created_ms, updated_ms) VALUES ('cu', 'group', 'thon-1', 'Cũ', 'normal', 2,"
                " 'FREQ=DAILY', 'Asia/Ho_Chi_Minh', '2030-01-07T06:30:00', '[]', 0, 'vi', :yes,"
                " 1, 'bt', 0, 0)"
            ),
            {"yes": True},
        )
    engine.dispose()
    assert "broadcast_0003_times" in upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine).begin() as s:
        row = s.query(ScheduleRow).one()
        old = Entry.of(row)
        assert old.times == [] and old.targets == [Target("group", "thon-1")]
        row.times, row.dtstart = ["17:00", "05:45"], "2030-01-08T00:00:00"
        row.more_targets = [{"kind": "group", "id": "thon-2"}]
    engine.dispose()
    command.downgrade(alembic_config(database_url), "broadcast_0002")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT dtstart FROM schedules")).scalar() == (
            "2030-01-08T05:45:00"
        )
    engine.dispose()
    upgrade(database_url)


def test_plays_of_each_time_are_told_apart_in_the_calendar_and_the_play_log(app: Ctl) -> None:
    clip = _clip(app)
    yesterday = (datetime.now(TZ) - timedelta(days=1)).date()
    made = app.call(
        "broadcaster",
        "POST",
        "/api/schedules",
        json=_body(clip, dtstart=f"{yesterday}T00:00:00", rrule="FREQ=DAILY"),
    )
    assert made.status_code == 201, made.text  # fmt: skip
    item = made.json()["item_id"]
    at = local_ms(f"{yesterday}T06:30:00")
    played = {"key": f"{item}-0630@{yesterday}T06:30:00", "origin": "schedule", "priority": 2,
              "planned_ms": at, "label": "Bản tin thôn", "item_id": f"{item}-0630",
              "actual_ms": at + 30, "outcome": "completed", "played_ms": 1_000}  # fmt: skip
    told = Event(id="p1", type="play.finished", ts=at + 1030, body=played)
    with app.app.state.xaso.sessions.begin() as db:  # through ingest's writer, as a speaker's
        write_batch(db, [Item("loa-1", "event", told, at + 2000)], at + 2000)
    with app.app.state.xaso.sessions() as db:
        (row,) = play_log(db, at - 1, at + 86_400_000)
    assert (row.device_id, row.item_id, row.label, row.result) == (
        "loa-1",
        f"{item}-0630",
        "Bản tin thôn",
        "completed",
    )
    page = app.call("officer", "GET", "/schedules", params={"day": str(yesterday)}).text
    loa_1 = page[page.index('data-device="loa-1"') :]
    loa_1 = loa_1[: loa_1.index("</table>")]
    morning, evening = (loa_1[loa_1.index(f"{when}:00") :] for when in ("06:30", "17:00"))
    assert morning[: morning.index("</tr>")].count("Phát trọn vẹn") == 1
    assert "Chưa có báo cáo từ cụm loa" in evening[: evening.index("</tr>")]
