"""The bulletin inbox (Circular 39) on both databases, publishing on a real broker."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from controller.radio.bulletins import BulletinInbox
from controller.radio.clip_library import Conflict, Invalid
from controller.radio.targets import Target
from tests import test_scheduling as harness
from tests.test_scheduling import TZ, Station

sessions, station = harness.sessions, harness.station  # the fixtures, shared
THON_1 = Target("group", "thon-1")


@pytest.fixture
def inbox(station: Station) -> BulletinInbox:
    return BulletinInbox(station.library.sessions, station.scheduling, station.broadcasting)


def test_a_normal_bulletin_waits_for_the_operator_who_schedules_it(
    station: Station, inbox: BulletinInbox, probe: Any
) -> None:
    clip = station.tone(550, 0.5)
    got = inbox.receive(
        source="stt-tinh",
        external_id="BT-2026-001",
        title="Lịch tiêm phòng gia súc",
        level="normal",
        targets=[THON_1],
        clip_sha256=clip.sha256,
    )
    assert got.state == "pending" and [b.id for b in inbox.inbox("pending")] == [got.id]
    again = inbox.receive(  # delivered twice by the sender: one bulletin
        source="stt-tinh",
        external_id="BT-2026-001",
        title="Lịch tiêm phòng gia súc",
        level="normal",
        targets=[THON_1],
        clip_sha256=clip.sha256,
    )
    assert again.id == got.id and len(inbox.inbox()) == 1
    assert not [m for m in probe.messages if m.topic.endswith(("/cmd", "/schedule"))]
    when = (datetime.now(TZ) + timedelta(days=1)).replace(microsecond=0, tzinfo=None)
    with pytest.raises(Invalid) as no_time:
        inbox.accept(got.id, by="bt")
    assert no_time.value.code == "no_time"
    accepted = inbox.accept(got.id, by="bt", dtstart=when.isoformat())
    assert accepted.state == "accepted" and accepted.decided_by == "bt"
    entry = station.scheduling.get(accepted.schedule_id or 0)
    assert entry.label == "Lịch tiêm phòng gia súc" and entry.target == THON_1
    doc = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/schedule")
    assert doc.json()["body"]["items"][0]["clip"]["sha256"] == clip.sha256
    with pytest.raises(Conflict):
        inbox.decline(got.id, by="bt")


def test_a_declined_bulletin_never_airs(station: Station, inbox: BulletinInbox) -> None:
    got = inbox.receive(
        source="stt-tinh",
        external_id="BT-2026-002",
        title="Chương trình văn nghệ",
        level="normal",
        targets=[THON_1],
        stream_url="http://radio.example/tinh",
        stream_duration_s=600,
    )
    declined = inbox.decline(got.id, by="bt", note="Trùng giờ họp thôn")
    assert declined.state == "declined" and declined.note == "Trùng giờ họp thôn"
    with pytest.raises(Conflict) as twice:
        inbox.accept(got.id, by="bt", play_now=True)
    assert twice.value.code == "already_decided"
    assert station.broadcasting.recent() == []


def test_emergency_and_priority_bulletins_go_on_air_without_acceptance(
    station: Station, inbox: BulletinInbox, probe: Any
) -> None:
    clip = station.tone(880, 0.5)
    storm = inbox.receive(
        source="stt-tinh",
        external_id="KC-01",
        title="Cảnh báo bão số 5",
        level="emergency",
        targets=[Target("group", "all")],
        clip_sha256=clip.sha256,
    )
    assert storm.state == "aired" and storm.decided_by == "auto:stt-tinh"
    sent = station.broadcasting.get(storm.broadcast_id or "")
    assert sent.priority == 9 and sent.label == "Cảnh báo bão số 5"
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/all/cmd")
    assert cmd.json()["id"] == sent.id and cmd.json()["body"]["priority"] == 9
    notice = inbox.receive(
        source="stt-tinh",
        external_id="UT-01",
        title="Thông báo ưu tiên",
        level="priority",
        targets=[THON_1],
        clip_sha256=clip.sha256,
    )
    assert notice.state == "aired"
    assert station.broadcasting.get(notice.broadcast_id or "").priority == 5
    assert inbox.inbox("pending") == []


def test_bad_bulletins_are_refused(station: Station, inbox: BulletinInbox) -> None:
    clip = station.tone(440, 0.5)

    def refused(**kw: Any) -> Invalid:
        args: dict[str, Any] = {
            "source": "stt-tinh",
            "external_id": "X-1",
            "title": "Tin",
            "level": "normal",
            "targets": [THON_1],
            "clip_sha256": clip.sha256,
            **kw,
        }
        with pytest.raises(Invalid) as caught:
            inbox.receive(**args)
        return caught.value

    assert refused(clip_sha256="a" * 64).code == "unknown_clip"
    assert refused(targets=[Target("group", "thon-9")]).code == "unknown_target"
    assert refused(targets=[]).code == "no_target"
    assert refused(level="urgent").code == "bad_level"
    assert refused(title="x" * 201).code == "bad_bulletin"
    assert refused(external_id="").code == "bad_bulletin"
    assert refused(clip_sha256=None).code == "bad_source"
    assert refused(clip_sha256=None, stream_url="http://radio.example/x").code == "bad_source"
    assert inbox.inbox() == []
