"""Approval before air in the radio core, on both databases, with real agents on a real
Mosquitto: a held entry reaches no speaker until a leader approves it, then it plays.

The gate (controller/radio/approval_gate.py) is consulted by scheduling and
broadcasting; the desk (controller/radio/approvals.py) lets things go. The
station harness is test_scheduling's, with the gate wired in as the app wires it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.db.broadcast_tables import PublishedDocumentRow
from controller.radio.approval_gate import ApprovalGate, Ruling, ruling
from controller.radio.approvals import ApprovalDesk
from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.broadcasting import Held
from controller.radio.bulletins import BulletinInbox
from controller.radio.clip_library import Conflict, Invalid, NotFound
from controller.radio.schedule_entries import EntryInput
from controller.radio.scheduling import Scheduling
from controller.radio.targets import Target
from controller.site.directory import Site
from protocol.envelope import open_envelope
from protocol.signing import Keyring
from tests import test_scheduling as harness
from tests.test_scheduling import NOW, TZ, Station, add_clip, entry, local_ms
from tests.timing import on_time

sessions, station = harness.sessions, harness.station  # the fixtures, shared
registered = harness.registered


def test_the_rule_holds_only_what_owes_approval() -> None:
    assert ruling(required=False, level="normal", approved=False) is Ruling.AIR
    assert ruling(required=False, level="emergency", approved=False) is Ruling.AIR
    assert ruling(required=True, level="normal", approved=False) is Ruling.HOLD
    assert ruling(required=True, level="priority", approved=False) is Ruling.HOLD
    assert ruling(required=True, level="emergency", approved=False) is Ruling.REVIEW
    assert ruling(required=True, level="normal", approved=True) is Ruling.AIR


@pytest.fixture
def gated(station: Station) -> Iterator[tuple[Station, ApprovalGate, ApprovalDesk]]:
    gate = ApprovalGate(station.scheduling.sessions)
    station.scheduling.gate = gate
    station.broadcasting.gate = gate
    with gate.sessions.begin() as session:
        gate.set_required(session, True, by="admin")
    yield station, gate, ApprovalDesk(gate.sessions, station.scheduling, station.broadcasting)


def test_a_held_entry_reaches_no_speaker_until_a_leader_approves_then_it_plays(
    gated: tuple[Station, ApprovalGate, ApprovalDesk], probe: Any
) -> None:
    station, _gate, desk = gated
    clip = station.tone(440, 1.0)
    station.spawn("loa-1", "loa-3")
    probe.status_is("loa-1", "online")
    probe.status_is("loa-3", "online")
    start = (datetime.now(TZ) + timedelta(seconds=25)).replace(microsecond=0, tzinfo=None)
    planned_ms = local_ms(start.isoformat())
    made = station.scheduling.create(
        EntryInput(
            target_kind="group",
            target_id="thon-1",
            clip_sha256=clip.sha256,
            dtstart=start.isoformat(),
            rrule="FREQ=DAILY;COUNT=1",
            label="Bản tin thôn 1",
        ),
        by="bt",
    )
    assert made.approval == "pending"
    # a barrier: a leader's entry for thon-2 airs at once; once the probe has its
    # document, it has everything the controller published before, and nothing for thon-1
    other = station.scheduling.create(
        entry("group:thon-2", clip.sha256, "2030-01-06T06:30:00"), by="lanh-dao", approved=True
    )
    assert other.approval == "approved"
    probe.wait_for(lambda m: m.topic == "xaso/grp/thon-2/schedule")
    assert probe.on("xaso/grp/thon-1/schedule") == []
    with station.scheduling.sessions() as session:  # nothing was even signed for thon-1
        assert session.get(PublishedDocumentRow, "xaso/grp/thon-1/schedule") is None
    (waiting,) = desk.waiting()
    assert (waiting.kind, waiting.state, waiting.schedule_id) == ("schedule", "pending", made.id)
    assert (waiting.prepared_by, waiting.label) == ("bt", "Bản tin thôn 1")

    done = desk.approve(waiting.id, by="lanh-dao")
    assert (done.state, done.decided_by) == ("approved", "lanh-dao")
    assert station.scheduling.get(made.id).approval == "approved"
    doc = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/schedule")
    keys = Keyring.from_mapping(station.site.trusted_keys())
    opened = open_envelope(doc.payload, keys, planned_ms)
    assert [i.id for i in opened.body.items] == [made.item_id]  # type: ignore[attr-defined]
    for device in ("loa-1", "loa-3"):
        (played,) = station.wait_recordings(device, 1)
        assert played["key"] == f"{made.item_id}@{start.isoformat()}"
        assert on_time(played["started_ms"], planned_ms), (played, planned_ms)
        assert abs(station.pitch(device, played) - 440) < 10
    assert desk.waiting() == []


def test_editing_an_approved_entry_takes_it_off_air_until_approved_again(
    gated: tuple[Station, ApprovalGate, ApprovalDesk], probe: Any
) -> None:
    station, _gate, desk = gated
    clip = add_clip(station.scheduling.sessions, "sang", 60_000)
    made = station.scheduling.create(
        entry("group:thon-1", clip, "2030-01-06T06:30:00", label="Sáng"), by="bt"
    )
    desk.approve(desk.waiting()[0].id, by="lanh-dao")
    first = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/schedule")
    assert [i["id"] for i in first.json()["body"]["items"]] == [made.item_id]
    fields = {
        "target_kind": "group",
        "target_id": "thon-1",
        "clip_sha256": clip,
        "rrule": "FREQ=DAILY",
        "dtstart": "2030-01-06T07:00:00",
        "label": "Sáng muộn",
    }
    edited = station.scheduling.update(made.id, EntryInput(**fields), by="bt")
    assert edited.approval == "pending" and edited.version == 2
    docs = probe.wait_on("xaso/grp/thon-1/schedule", 2)
    assert docs[1].json()["body"]["items"] == []  # the edit is off air while it waits
    (waiting,) = desk.waiting()
    assert waiting.label == "Sáng muộn"
    # a rejection says why; editing again makes it wait anew, the old request withdrawn
    with pytest.raises(Invalid) as no_reason:
        desk.reject(waiting.id, by="lanh-dao", reason="   ")
    assert no_reason.value.code == "no_reason" and "lý do" in no_reason.value.message_vi
    rejected = desk.reject(waiting.id, by="lanh-dao", reason="Sai giờ phát, đề nghị 6 giờ")
    assert rejected.state == "rejected" and rejected.reason == "Sai giờ phát, đề nghị 6 giờ"
    assert station.scheduling.get(made.id).approval == "rejected"
    assert desk.decided(author="bt")[0].reason == "Sai giờ phát, đề nghị 6 giờ"
    with pytest.raises(Conflict) as again:
        desk.approve(waiting.id, by="lanh-dao")
    assert again.value.code == "already_decided"
    station.scheduling.update(made.id, EntryInput(**{**fields, "label": "Sáng 6 giờ"}), by="bt")
    (anew,) = desk.waiting()
    assert anew.id != waiting.id and anew.label == "Sáng 6 giờ"
    desk.approve(anew.id, by="lanh-dao")
    last = probe.wait_on("xaso/grp/thon-1/schedule", 4)[-1]
    assert [i["label"] for i in last.json()["body"]["items"]] == ["Sáng 6 giờ"]


def test_a_held_play_is_sent_only_on_approval_and_an_emergency_at_once_for_review(
    gated: tuple[Station, ApprovalGate, ApprovalDesk], probe: Any
) -> None:
    station, _gate, desk = gated
    clip = add_clip(station.scheduling.sessions, "loa", 5_000)
    held = station.broadcasting.play_now([Target("group", "thon-1")], by="bt", clip_sha256=clip,
                                         label="Thông báo họp")  # fmt: skip
    assert isinstance(held, Held)
    assert station.broadcasting.recent() == []  # nothing sent, no broadcast row
    sent = station.broadcasting.emergency([Target("group", "all")], clip, by="bt", label="Bão")
    assert isinstance(sent, BroadcastInfo)
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/all/cmd")
    assert cmd.json()["id"] == sent.id
    assert probe.on("xaso/grp/thon-1/cmd") == []  # the emergency went after the held play
    waiting = {i.kind: i for i in desk.waiting()}
    assert waiting["play"].id == held.approval_id and waiting["play"].state == "pending"
    assert waiting["emergency"].state == "review" and waiting["emergency"].broadcast_id == sent.id

    approved = desk.approve(held.approval_id, by="lanh-dao")
    assert approved.broadcast_id is not None
    play = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/cmd")
    assert play.json()["id"] == approved.broadcast_id and play.json()["type"] == "broadcast.play"
    assert (
        station.broadcasting.get(approved.broadcast_id).created_by == "bt"
    )  # in its author's name
    reviewed = desk.mark_reviewed(waiting["emergency"].id, by="lanh-dao")
    assert reviewed.state == "reviewed"
    assert desk.waiting() == []
    with pytest.raises(Conflict):
        desk.mark_reviewed(waiting["emergency"].id, by="lanh-dao")


def test_unknown_own_and_deleted_items_are_refused_in_words(
    sessions: sessionmaker[Session], registered: Site
) -> None:
    gate = ApprovalGate(sessions, clock=lambda: NOW)
    scheduling = Scheduling(sessions, registered, clip_base_url="http://c:8080", gate=gate,
                            clock=lambda: NOW)  # fmt: skip
    desk = ApprovalDesk(sessions, scheduling, None, clock=lambda: NOW)  # type: ignore[arg-type]
    assert gate.required() is False  # off until an administrator turns it on
    clip = add_clip(sessions, "mot", 60_000)
    off = scheduling.create(entry("group:thon-1", clip, "2030-01-06T06:30:00"), by="bt")
    assert off.approval == "approved" and desk.waiting() == []  # off: as before
    with sessions.begin() as session:
        assert gate.set_required(session, True, by="admin") is True
        assert gate.set_required(session, True, by="admin") is False
    made = scheduling.create(entry("group:thon-2", clip, "2030-01-06T06:30:00"), by="bt")
    (waiting,) = desk.waiting()
    with pytest.raises(NotFound) as unknown:
        desk.approve(999, by="lanh-dao")
    assert unknown.value.code == "approval_not_found" and "999" in unknown.value.message_vi
    with pytest.raises(Conflict) as own:
        desk.approve(waiting.id, by="bt")
    assert own.value.code == "own_work" and "chính mình" in own.value.message_vi
    with pytest.raises(Invalid):
        desk.reject(waiting.id, by="lanh-dao", reason="x" * 501)
    scheduling.delete(made.id, by="bt")  # deleting what waits withdraws it
    assert desk.waiting() == []
    with pytest.raises(Conflict) as gone:
        desk.approve(waiting.id, by="lanh-dao")
    assert gone.value.code == "already_decided"
    # an emergency entry airs at once, and waits to be reviewed
    urgent = scheduling.create(
        entry("group:all", clip, "2030-01-06T06:30:00", level="emergency", label="Lũ"), by="bt"
    )
    assert urgent.approval == "approved"
    (flagged,) = desk.waiting()
    assert (flagged.kind, flagged.state, flagged.schedule_id) == ("emergency", "review", urgent.id)
    assert desk.mark_reviewed(flagged.id, by="lanh-dao").state == "reviewed"


def test_a_bulletin_put_on_air_by_a_broadcaster_waits_but_one_from_above_does_not(
    gated: tuple[Station, ApprovalGate, ApprovalDesk], probe: Any
) -> None:
    station, _gate, desk = gated
    inbox = BulletinInbox(station.scheduling.sessions, station.scheduling, station.broadcasting)
    clip = add_clip(station.scheduling.sessions, "tinh", 5_000)
    thon_1 = Target("group", "thon-1")

    def receive(external_id: str, level: str) -> int:
        got = inbox.receive(
            source="stt-tinh",
            external_id=external_id,
            title=f"Bản tin {level}",
            level=level,  # type: ignore[arg-type]
            targets=[thon_1],
            clip_sha256=clip,
        )
        return got.id

    # from above: a priority bulletin airs at once, approval or not (Circular 39)
    aired = inbox.get(receive("BT-1", "priority"))
    assert aired.state == "aired" and aired.broadcast_id is not None
    probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/cmd")
    # what a broadcaster makes of a normal one waits: into the schedule, or to play now
    scheduled = inbox.accept(receive("BT-2", "normal"), by="bt", dtstart="2030-01-06T06:30:00")
    assert scheduled.state == "accepted" and scheduled.schedule_id is not None
    assert station.scheduling.get(scheduled.schedule_id).approval == "pending"
    played = inbox.accept(receive("BT-3", "normal"), by="bt", play_now=True)
    assert played.state == "accepted" and played.broadcast_id is None
    assert sorted(i.kind for i in desk.waiting()) == ["play", "schedule"]
    assert [b.id for b in station.broadcasting.recent()] == [aired.broadcast_id]
    with station.scheduling.sessions() as session:
        assert session.get(PublishedDocumentRow, "xaso/grp/thon-1/schedule") is None
