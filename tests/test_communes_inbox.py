"""The bulletin inbox keyed by commune (issue 14), over the API and the page, on SQLite and
PostgreSQL with the app's station on a real Mosquitto: a bulletin from above names the
commune it is for, or none (the province: every commune's to see, the province's to
decide); a commune's token sends only for its own; removing a commune's entry for a clip
is refused while that commune's bulletins use it."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from controller.db.broadcast_tables import (
    BroadcastRow,
    BulletinRow,
    ClipRow,
    ClipShareRow,
    ScheduleRow,
)
from controller.web.routes.bulletins import language_name
from tests import test_communes_radio as radio
from tests.broadcast_api_helpers import refused
from tests.commune_helpers import COMMUNES, OTHER, VILLAGE, Two

two = radio.two  # the fixture, shared
CLIPS, TITLES = radio.CLIPS, radio.TITLES
PROVINCE = (None, "broadcaster")


def ours(commune: str) -> list[dict[str, str]]:
    return [{"kind": "group", "id": VILLAGE[commune]}]


def bulletin(external_id: str, commune: str | None, **kw: Any) -> dict[str, Any]:
    body = {"external_id": external_id, "title": f"Tin {external_id}", "level": "normal",
            "targets": ours(commune) if commune else [{"kind": "group", "id": "all"}],
            "clip_sha256": CLIPS[commune], "commune": commune}  # fmt: skip
    return body | kw


def send(two: Two, who: tuple[str | None, str], body: dict[str, Any]) -> dict[str, Any]:
    answer = two.call(who, "POST", "/api/bulletins", json=body)
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


@pytest.fixture
def sent(two: Two) -> dict[str | None, int]:
    """From the province's system: a bulletin for each commune and one for the province."""
    return {c: send(two, PROVINCE, bulletin(f"BT-{c or 'tinh'}", c))["id"] for c in CLIPS}


@pytest.mark.parametrize("role", ["broadcaster", "admin"])
@pytest.mark.parametrize("commune", list(COMMUNES))
def test_a_commune_sees_its_bulletins_and_the_provinces_and_decides_only_its_own(
    two: Two, sent: dict[str | None, int], commune: str, role: str
) -> None:
    me, other = (commune, role), OTHER[commune]
    listed = {b["id"]: b for b in two.call(me, "GET", "/api/bulletins").json()}
    assert set(listed) == {sent[commune], sent[None]}
    assert listed[sent[commune]]["commune"] == commune and listed[sent[None]]["commune"] is None
    pending = two.call(me, "GET", "/api/bulletins", params={"state": "pending"}).json()
    assert {b["id"] for b in pending} == {sent[commune], sent[None]}
    theirs = sent[other]
    refused(two.call(me, "GET", f"/api/bulletins/{theirs}"), 404, "bulletin_not_found")
    refused(two.call(me, "POST", f"/api/bulletins/{theirs}/decline", json={}), 404,
            "bulletin_not_found")  # fmt: skip
    accept_now = {"play_now": True}
    refused(two.call(me, "POST", f"/api/bulletins/{theirs}/accept", json=accept_now), 404)
    assert two.call(me, "GET", f"/api/bulletins/{sent[None]}").status_code == 200
    for verb, body in (("accept", accept_now), ("decline", {})):
        answer = refused(two.call(me, "POST", f"/api/bulletins/{sent[None]}/{verb}", json=body),
                         403, "province_bulletin")  # fmt: skip
        assert "cấp tỉnh" in answer["vi"]
    html = two.call(me, "GET", "/bulletins").text
    assert f"Tin BT-{commune}" in html and "Tin BT-tinh" in html
    assert f"Tin BT-{other}" not in html
    assert f'action="/bulletins/{sent[commune]}/accept"' in html
    assert f'action="/bulletins/{sent[None]}/accept"' not in html  # the province's to handle
    assert "cấp tỉnh xử lý" in html and COMMUNES[commune] in html
    posted = two.call(me, "POST", f"/bulletins/{sent[None]}/decline", data={"note": "x"})
    assert posted.status_code == 403 and "cấp tỉnh" in posted.text
    declined = two.call(me, "POST", f"/api/bulletins/{sent[commune]}/decline", json={})
    assert declined.status_code == 200 and declined.json()["state"] == "declined"
    states = {b["id"]: b["state"] for b in two.call(PROVINCE, "GET", "/api/bulletins").json()}
    assert states == {sent[commune]: "declined", sent[other]: "pending", sent[None]: "pending"}


def test_the_province_sees_every_bulletin_and_decides_any(
    two: Two, sent: dict[str | None, int]
) -> None:
    listed = {b["id"] for b in two.call((None, "admin"), "GET", "/api/bulletins").json()}
    assert listed == set(sent.values())
    html = two.call((None, "admin"), "GET", "/bulletins").text
    assert "· tiếng Việt<br>" in html and "· vi<br>" not in html  # its language in words
    english = two.call((None, "admin"), "GET", "/bulletins", params={"lang": "en"}).text
    assert "· in Vietnamese<br>" in english
    for commune, name in COMMUNES.items():
        assert f'action="/bulletins/{sent[commune]}/accept"' in html and name in html
    assert f'action="/bulletins/{sent[None]}/accept"' in html
    for bulletin_id in sent.values():
        done = two.call(PROVINCE, "POST", f"/api/bulletins/{bulletin_id}/decline", json={})
        assert done.status_code == 200 and done.json()["state"] == "declined"


def test_a_commune_accepts_its_bulletin_into_its_own_schedule(
    two: Two, sent: dict[str | None, int]
) -> None:
    me = ("phu-an", "broadcaster")
    far = {"dtstart": "2030-01-06T06:30:00", "targets": ours("tan-binh")}
    refused(two.call(me, "POST", f"/api/bulletins/{sent['phu-an']}/accept", json=far), 403,
            "outside_commune")  # fmt: skip
    mine = {"dtstart": "2030-01-06T06:30:00"}
    done = two.call(me, "POST", f"/api/bulletins/{sent['phu-an']}/accept", json=mine)
    assert done.status_code == 200 and done.json()["state"] == "accepted", done.text
    entry = two.call(me, "GET", f"/api/schedules/{done.json()['schedule_id']}").json()
    assert entry["label"] == "Tin BT-phu-an"
    with two.app.state.xaso.sessions() as db:
        assert db.get(ScheduleRow, entry["id"]).commune == "phu-an"
    refused(two.call(("tan-binh", "admin"), "GET", f"/api/schedules/{entry['id']}"), 404)


def test_what_a_bulletin_may_name_is_the_senders_commune_its_speakers_and_clips(
    two: Two,
) -> None:
    an = ("phu-an", "broadcaster")
    own = send(two, an, bulletin("AN-1", "phu-an") | {"commune": None})
    assert own["commune"] == "phu-an"  # a commune's token: its own commune's by default
    refused(two.call(an, "POST", "/api/bulletins", json=bulletin("AN-2", "tan-binh")), 403,
            "bulletin_other_commune")  # fmt: skip
    refused(
        two.call(an, "POST", "/api/bulletins", json=bulletin("AN-3", None)), 403, "outside_commune"
    )  # the province's "all" reaches another commune's speaker
    far = bulletin("T-1", "phu-an", targets=ours("tan-binh"))
    refused(two.call(PROVINCE, "POST", "/api/bulletins", json=far), 403, "outside_commune")
    wrong_clip = bulletin("T-2", "phu-an", clip_sha256=CLIPS["tan-binh"])
    refused(two.call(PROVINCE, "POST", "/api/bulletins", json=wrong_clip), 422, "unknown_clip")
    provinces = bulletin("T-3", "phu-an", clip_sha256=CLIPS[None])
    assert send(two, PROVINCE, provinces)["commune"] == "phu-an"  # the province's clip: all's
    nowhere = bulletin("T-4", "phu-an") | {"commune": "xa-khac"}
    refused(two.call(PROVINCE, "POST", "/api/bulletins", json=nowhere), 422, "bad_commune")
    with two.app.state.xaso.sessions() as db:
        kept = db.scalars(sa.select(BulletinRow.external_id).order_by(BulletinRow.id)).all()
    assert kept == ["AN-1", "T-3"]  # nothing refused was written


def test_an_emergency_from_the_provinces_system_airs_as_the_provinces_a_communes_as_its_own(
    two: Two,
) -> None:
    urgent = {"level": "emergency"}
    province = send(two, PROVINCE, bulletin("KC-1", "phu-an", **urgent))
    local = send(two, ("tan-binh", "broadcaster"), bulletin("KC-2", "tan-binh", **urgent))
    assert province["state"] == local["state"] == "aired"
    with two.app.state.xaso.sessions() as db:
        aired = {
            b.id: (b.commune, b.priority)
            for b in db.scalars(
                sa.select(BroadcastRow).where(
                    BroadcastRow.id.in_([province["broadcast_id"], local["broadcast_id"]])
                )
            )
        }
    # the province's at the top priority, which no commune's stop reaches (tenancy.stop_cap)
    assert aired == {province["broadcast_id"]: (None, 9), local["broadcast_id"]: ("tan-binh", 8)}
    seen = two.call(("phu-an", "broadcaster"), "GET", f"/api/broadcasts/{province['broadcast_id']}")
    assert seen.status_code == 200  # it reached Phú An's speaker: Phú An sees it


def test_a_communes_bulletin_keeps_its_entry_for_the_clip_and_not_anothers(two: Two) -> None:
    sha = CLIPS["phu-an"]
    with two.app.state.xaso.sessions() as db:  # the same audio, in Tân Bình's library too
        db.add(ClipShareRow(sha256=sha, commune="tan-binh", title="Tin chung", created_by="x",
                            created_ms=2))  # fmt: skip
        db.commit()
    send(two, PROVINCE, bulletin("BT-1", "phu-an"))
    answer = refused(two.call(("phu-an", "broadcaster"), "DELETE", f"/api/clips/{sha}"), 409,
                     "clip_in_use")  # fmt: skip
    assert "1 bản tin" in answer["vi"]
    removed = two.call(("tan-binh", "broadcaster"), "DELETE", f"/api/clips/{sha}")
    assert removed.status_code == 200, removed.text  # not Tân Bình's bulletin
    refused(two.call((None, "admin"), "DELETE", f"/api/clips/{sha}"), 409, "clip_in_use")
    with two.app.state.xaso.sessions() as db:
        assert db.get(ClipRow, sha) is not None
        assert db.scalars(sa.select(ClipShareRow.commune)).all() == []


def test_a_bulletins_language_reads_as_words_and_an_unnamed_one_keeps_its_code() -> None:
    assert language_name("vi", "en-US") == "tiếng Anh"
    assert language_name("en", "vi") == "in Vietnamese"
    assert language_name("vi", "km") == "ngôn ngữ km"
