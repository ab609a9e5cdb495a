"""The radio keyed by commune (issue 14, step 2), over the API and the pages, on SQLite and
PostgreSQL with the app's station on a real Mosquitto: clips, relay stations, schedule
entries and their calendar, approvals and the audit log. Neither commune sees or touches
the other's; the province's clips, stations and entries are every commune's to use or see
and the province's to change; with approval on for one commune, its broadcaster's entry
reaches no device until its own leader approves it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from controller.db.broadcast_tables import ClipRow, RelayStationRow, ScheduleRow
from controller.site.directory import Site
from tests.broadcast_api_helpers import entry, make_app, refused
from tests.commune_helpers import COMMUNES, OTHER, OWN, VILLAGE, Two, add_communes

ROLES = ("broadcaster", "admin", "leader")
CLIPS = {"phu-an": "a" * 64, "tan-binh": "b" * 64, None: "c" * 64}
TITLES = {"phu-an": "Tin Phú An", "tan-binh": "Tin Tân Bình", None: "Tin của tỉnh"}


@pytest.fixture
def two(tmp_path: Path, database_url: str, site: Site, broker: Any) -> Iterator[Two]:
    """Two communes, each with a broadcaster, an admin and a leader; the province's admin
    and broadcaster; a clip in each library; the station connected to Mosquitto."""
    add_communes(site, broker.port)
    app = make_app(tmp_path, database_url, site, broker.port)
    with app.state.xaso.sessions() as db:
        for commune, sha in CLIPS.items():
            db.add(ClipRow(sha256=sha, title=TITLES[commune], duration_ms=2000, format="opus",
                           size_bytes=100, source="upload", text=None, lang="vi",
                           created_by="x", created_ms=1, commune=commune))  # fmt: skip
        db.commit()
    two = Two(app, ROLES, ("admin", "broadcaster"))
    with two.client:
        deadline = time.monotonic() + 30
        while not app.state.xaso.station.connected:
            assert time.monotonic() < deadline, "the station did not connect"
            time.sleep(0.05)
        yield two
    app.state.xaso.engine.dispose()


def ours(commune: str) -> dict[str, Any]:
    return {"kind": "group", "id": VILLAGE[commune]}


def count(two: Two, table: Any) -> int:
    with two.app.state.xaso.sessions() as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


@pytest.mark.parametrize("commune", list(COMMUNES))
def test_a_commune_plays_its_own_clips_and_the_provinces_and_deletes_only_its_own(
    two: Two, commune: str
) -> None:
    me, theirs = (commune, "broadcaster"), CLIPS[OTHER[commune]]
    listed = {c["sha256"]: c for c in two.call(me, "GET", "/api/clips").json()}
    assert set(listed) == {CLIPS[commune], CLIPS[None]}
    assert listed[CLIPS[None]]["commune"] is None
    html = two.call(me, "GET", "/clips").text
    assert TITLES[commune] in html and TITLES[None] in html
    assert theirs[:12] not in html and TITLES[OTHER[commune]] not in html
    assert "Của cấp tỉnh" in html  # no delete button on the province's clip
    assert two.call(me, "GET", f"/clips/{theirs}/audio").status_code == 404
    refused(two.call(me, "DELETE", f"/api/clips/{theirs}"), 404, "clip_not_found")
    answer = refused(two.call(me, "DELETE", f"/api/clips/{CLIPS[None]}"), 403, "province_clip")
    assert "cấp tỉnh" in answer["vi"]
    play = {"targets": [ours(commune)], "clip_sha256": theirs}
    refused(two.call(me, "POST", "/api/broadcasts", json=play), 404, "clip_not_found")
    assert count(two, ClipRow) == 3
    province = {c["sha256"] for c in two.call((None, "admin"), "GET", "/api/clips").json()}
    assert province == set(CLIPS.values())


def test_the_same_audio_from_two_communes_is_one_file_with_an_entry_for_each(
    two: Two, tmp_path: Path
) -> None:
    from tests.audio_helpers import tone_file

    wav = tone_file(tmp_path / "tone.wav", 440, 0.5)
    made = {}
    for commune in COMMUNES:
        with wav.open("rb") as f:
            answer = two.call((commune, "broadcaster"), "POST", "/api/clips",
                              files={"file": ("tone.wav", f)},
                              data={"title": f"Chuông {commune}"})  # fmt: skip
        assert answer.status_code == 201, answer.text
        made[commune] = answer.json()
    an, binh = made["phu-an"], made["tan-binh"]
    assert an["sha256"] == binh["sha256"] and an["commune"] == "phu-an"
    assert binh["commune"] == "tan-binh" and binh["title"] == "Chuông tan-binh"
    sha = an["sha256"]
    assert len(list((tmp_path / "clips").glob(f"{sha}.*"))) == 1
    assert count(two, ClipRow) == 4  # one row for the file
    removed = two.call(("phu-an", "broadcaster"), "DELETE", f"/api/clips/{sha}")
    assert removed.status_code == 200
    assert sha not in {
        c["sha256"] for c in two.call(("phu-an", "admin"), "GET", "/api/clips").json()
    }
    kept = {c["sha256"]: c for c in two.call(("tan-binh", "admin"), "GET", "/api/clips").json()}
    assert kept[sha]["title"] == "Chuông tan-binh"
    assert len(list((tmp_path / "clips").glob(f"{sha}.*"))) == 1  # tan-binh's still
    assert two.call(("tan-binh", "broadcaster"), "DELETE", f"/api/clips/{sha}").status_code == 200
    assert list((tmp_path / "clips").glob(f"{sha}.*")) == []


def test_stations_per_commune_and_the_provinces_for_all(two: Two) -> None:
    vov = {"name": "VOV1", "url": "https://str.vov.gov.vn/vov1"}
    made = two.call((None, "admin"), "POST", "/api/stations", json=vov)
    assert made.status_code == 201 and made.json()["commune"] is None
    vov_id = made.json()["id"]
    own = {"name": "Đài xã Phú An", "url": "https://radio.phu-an.example/live"}
    an = two.call(("phu-an", "broadcaster"), "POST", "/api/stations", json=own).json()
    assert an["commune"] == "phu-an"
    binh = ("tan-binh", "broadcaster")
    assert [s["name"] for s in two.call(binh, "GET", "/api/stations").json()] == ["VOV1"]
    for method, body in (("PUT", own), ("DELETE", None)):
        refused(two.call(binh, method, f"/api/stations/{an['id']}", json=body), 404,
                "station_not_found")  # fmt: skip
    answer = refused(two.call(binh, "PUT", f"/api/stations/{vov_id}", json=vov | {"url":
                     "https://x.example/a"}), 403, "province_station")  # fmt: skip
    assert "cấp tỉnh" in answer["vi"]
    refused(two.call(binh, "DELETE", f"/api/stations/{vov_id}"), 403, "province_station")
    relay = {"targets": [ours("tan-binh")], "minutes": 5}
    refused(two.call(binh, "POST", f"/api/stations/{an['id']}/relay", json=relay), 404)
    relayed = two.call(binh, "POST", f"/api/stations/{vov_id}/relay", json=relay)
    assert relayed.status_code == 201, relayed.text  # the province's is theirs to relay
    far = {"targets": [ours("phu-an")], "minutes": 5}
    refused(two.call(binh, "POST", f"/api/stations/{vov_id}/relay", json=far), 403,
            "outside_commune")  # fmt: skip
    html = two.call(binh, "GET", "/stations").text
    assert "VOV1" in html and "Đài xã Phú An" not in html and "Của cấp tỉnh" in html
    with two.app.state.xaso.sessions() as db:
        rows = {r.name: (r.url, r.commune) for r in db.scalars(sa.select(RelayStationRow))}
    assert rows == {"VOV1": (vov["url"], None), own["name"]: (own["url"], "phu-an")}


def test_schedule_entries_calendar_and_preview_keep_to_the_commune(two: Two) -> None:
    an, binh = ("phu-an", "broadcaster"), ("tan-binh", "broadcaster")
    mine = two.call(
        an,
        "POST",
        "/api/schedules",
        json=entry(CLIPS["phu-an"], target=ours("phu-an"), label="Lịch Phú An"),
    )
    assert mine.status_code == 201, mine.text
    assert mine.json()["approval"] == "approved"
    province = two.call(
        (None, "broadcaster"),
        "POST",
        "/api/schedules",
        json=entry(
            CLIPS[None],
            target={"kind": "group", "id": "all"},
            label="Lịch của tỉnh",
            dtstart="2030-01-06T05:00:00",
        ),
    )
    assert province.status_code == 201, province.text
    entries_before = count(two, ScheduleRow)
    for bad, status, code in (
        (entry(CLIPS["tan-binh"], target=ours("phu-an")), 403, "outside_commune"),
        (entry(CLIPS["tan-binh"], target={"kind": "group", "id": "all"}), 403, "outside_commune"),
        (entry(CLIPS["phu-an"], target=ours("tan-binh")), 404, "clip_not_found"),
    ):
        refused(two.call(binh, "POST", "/api/schedules", json=bad), status, code)
        refused(two.call(binh, "POST", "/api/schedules/preview",
                         json={"entry": bad, "start": "2030-01-06"}), status, code)  # fmt: skip
    assert count(two, ScheduleRow) == entries_before
    theirs = mine.json()["id"]
    assert two.call(binh, "GET", "/api/schedules").json() == []
    refused(two.call(binh, "GET", f"/api/schedules/{theirs}"), 404, "entry_not_found")
    change = entry(CLIPS["tan-binh"], target=ours("tan-binh")) | {"expected_version": 1}
    refused(two.call(binh, "PUT", f"/api/schedules/{theirs}", json=change), 404)
    refused(two.call(binh, "DELETE", f"/api/schedules/{theirs}"), 404)
    ruled = province.json()["id"]
    assert two.call(binh, "GET", f"/api/schedules/{ruled}").status_code == 200  # seen, read-only
    refused(two.call(binh, "PUT", f"/api/schedules/{ruled}", json=change), 403, "province_entry")
    refused(two.call(binh, "DELETE", f"/api/schedules/{ruled}"), 403, "province_entry")
    week = two.call(binh, "GET", "/api/calendar", params={"start": "2030-01-06", "days": 2})
    plans = week.json()
    assert [p["device"] for p in plans] == [OWN["tan-binh"]]
    labels = {r["label"] for p in plans for r in p["rows"]}
    assert labels == {"Lịch của tỉnh"}  # what will air on its speaker, not Phú An's
    far = two.call(binh, "GET", "/api/calendar",
                   params={"start": "2030-01-06", "device": OWN["phu-an"]})  # fmt: skip
    refused(far, 422, "unknown_target")
    html = two.call(binh, "GET", "/schedules", params={"day": "2030-01-06"}).text
    assert "Lịch Phú An" not in html and OWN["phu-an"] not in html
    assert VILLAGE["phu-an"] not in html and "Lịch của tỉnh" in html
    with two.app.state.xaso.sessions() as db:
        kept = {r.label: r.commune for r in db.scalars(sa.select(ScheduleRow))}
    assert kept == {"Lịch Phú An": "phu-an", "Lịch của tỉnh": None}


def test_with_approval_on_for_one_commune_its_entry_waits_for_its_own_leader(
    two: Two, fleet: Any, probe: Any
) -> None:
    an_admin, binh_admin = ("phu-an", "admin"), ("tan-binh", "admin")
    refused(two.call(binh_admin, "PUT", "/api/settings/approval", params={"commune": "phu-an"},
                     json={"approval_required": True}), 403, "appr.other_commune")  # fmt: skip
    refused(two.call((None, "admin"), "PUT", "/api/settings/approval", params={"commune": "nope"},
                     json={"approval_required": True}), 422, "error.bad_commune")  # fmt: skip
    on = two.call((None, "admin"), "PUT", "/api/settings/approval", params={"commune": "phu-an"},
                  json={"approval_required": True})  # fmt: skip
    assert on.json() == {"approval_required": True}
    assert two.call(an_admin, "GET", "/api/settings/approval").json() == {"approval_required": True}
    assert two.call(binh_admin, "GET", "/api/settings/approval").json() == {
        "approval_required": False
    }
    assert two.call((None, "admin"), "GET", "/api/settings/approval").json() == {
        "approval_required": False  # the province's own: unchanged
    }
    held = two.call(
        ("phu-an", "broadcaster"),
        "POST",
        "/api/schedules",
        json=entry(CLIPS["phu-an"], target=ours("phu-an"), label="Tin riêng Phú An"),
    )
    assert held.status_code == 201 and held.json()["approval"] == "pending"
    aired = two.call(("tan-binh", "broadcaster"), "POST", "/api/schedules",
                     json=entry(CLIPS["tan-binh"], target=ours("tan-binh")))  # fmt: skip
    assert aired.json()["approval"] == "approved"  # Tân Bình's approval is off
    probe.wait_for(lambda m: m.topic == f"xaso/grp/{VILLAGE['tan-binh']}/schedule")
    assert probe.on(f"xaso/grp/{VILLAGE['phu-an']}/schedule") == []
    fresh = fleet.probe()  # the broker keeps no retained document for Phú An's village
    fresh.wait_for(lambda m: m.topic == f"xaso/grp/{VILLAGE['tan-binh']}/schedule" and m.retain)
    assert fresh.on(f"xaso/grp/{VILLAGE['phu-an']}/schedule") == []

    binh_leader, an_leader = ("tan-binh", "leader"), ("phu-an", "leader")
    assert two.call(binh_leader, "GET", "/api/approvals").json() == []
    (waiting,) = two.call(an_leader, "GET", "/api/approvals").json()
    assert waiting["schedule_id"] == held.json()["id"]
    for action, body in (("approve", None), ("reject", {"reason": "Không"})):
        refused(two.call(binh_leader, "POST", f"/api/approvals/{waiting['id']}/{action}",
                         json=body), 404, "approval_not_found")  # fmt: skip
    page = two.call(binh_leader, "GET", "/approvals").text
    assert "Tin riêng Phú An" not in page
    assert probe.on(f"xaso/grp/{VILLAGE['phu-an']}/schedule") == []
    approved = two.call(an_leader, "POST", f"/api/approvals/{waiting['id']}/approve")
    assert approved.status_code == 200, approved.text
    doc = probe.wait_for(lambda m: m.topic == f"xaso/grp/{VILLAGE['phu-an']}/schedule")
    assert [i["id"] for i in doc.json()["body"]["items"]] == [held.json()["item_id"]]

    steps = [e["action"] for e in two.call(an_admin, "GET", "/api/audit").json()
             if e["action"].startswith("approval.")]  # fmt: skip
    assert steps == ["approval.approve", "approval.prepare"]  # newest first
    theirs = two.call(binh_admin, "GET", "/api/audit").json()
    assert {e["commune"] for e in theirs} == {"tan-binh"}
    assert not [e for e in theirs if e["action"].startswith("approval.")]
    html = two.call(binh_admin, "GET", "/audit").text
    assert "broadcaster-phu-an" not in html and "leader-phu-an" not in html
    every = {e["commune"] for e in two.call((None, "admin"), "GET", "/api/audit").json()}
    assert {None, "phu-an", "tan-binh"} <= every
