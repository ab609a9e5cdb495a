"""Play now, emergencies and stops, end to end: real agents, real broker, both databases;
and how a batch of acks is recorded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from controller.db.broadcast_tables import BroadcastRow
from controller.fleet.ingest_writes import Item, write_batch
from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.broadcasting import Broadcasting
from controller.radio.clip_library import ClipLibrary, Invalid
from controller.radio.targets import Target
from controller.site.directory import Site
from protocol.uplink import Ack
from tests import test_scheduling as harness
from tests.test_scheduling import Station
from tests.timing import on_time

sessions, station = harness.sessions, harness.station  # the fixtures, shared

ALL = Target("group", "all")
SPEAKERS = ("loa-1", "loa-2", "loa-3")


def test_an_emergency_to_all_starts_every_speaker_together_at_the_shared_instant(
    station: Station, probe: Any
) -> None:
    alarm = station.tone(1000, 1.0)
    station.spawn(*SPEAKERS)
    for device in SPEAKERS:
        probe.status_is(device, "online")
    sent = station.broadcasting.emergency([ALL], alarm.sha256, by="bt", label="Bão số 5")
    assert sent.level == "emergency" and sent.priority == 9 and sent.kind == "play"
    assert sent.at_ms is not None and sent.at_ms - sent.created_ms == 4000  # the lead
    assert [a.device for a in sent.acks] == list(SPEAKERS) and sent.status == "sent"
    # one publish on the group's topic, read by every member
    (cmd, *_) = probe.wait_on("xaso/grp/all/cmd", 1)
    assert cmd.json()["id"] == sent.id and cmd.json()["body"]["at"] == sent.at_ms
    done = station.broadcasting.wait_acks(sent.id, timeout_s=30)
    assert done.status == "acked" and all(a.ok for a in done.acks), done.acks
    for device in SPEAKERS:  # the acks came after the command: by now it would show twice
        probe.ack_for(device, sent.id)
    assert len(probe.on("xaso/grp/all/cmd")) == 1
    starts = []
    for device in SPEAKERS:
        (played,) = station.wait_recordings(device, 1)
        assert played["key"] == sent.id
        assert abs(station.pitch(device, played) - 1000) < 10
        starts.append(played["started_ms"])
    # on time, each of them (how closely in step: bench/start_accuracy.py)
    assert all(on_time(start, sent.at_ms) for start in starts), (starts, sent.at_ms)


def test_play_now_to_overlapping_targets_plays_once_and_a_stop_cuts_it(
    station: Station, probe: Any
) -> None:
    long = station.tone(440, 6.0)
    station.spawn("loa-1", "loa-3")
    probe.status_is("loa-1", "online")
    probe.status_is("loa-3", "online")
    # loa-1 is in thon-1 and named too: it gets the command twice and refuses the copy
    sent = station.broadcasting.play_now(
        [Target("group", "thon-1"), Target("device", "loa-1")],
        by="bt",
        clip_sha256=long.sha256,
        label="Thông báo",
        lead_ms=3000,
    )
    assert [a.device for a in sent.acks] == ["loa-1", "loa-3"] and sent.priority == 2
    assert probe.ack_for("loa-1", sent.id)["ok"]
    probe.wait_until(
        lambda ms: (
            sum(m.topic == "xaso/dev/loa-1/ack" and m.json()["cmd"] == sent.id for m in ms) == 2
        )
    )
    assert station.broadcasting.wait_acks(sent.id, timeout_s=30).status == "acked"
    assert sent.at_ms is not None
    time.sleep(max(0.0, (sent.at_ms - time.time() * 1000) / 1000) + 1.0)  # the stimulus
    stopped = station.broadcasting.stop([Target("group", "thon-1")], by="bt")
    assert stopped.kind == "stop" and stopped.priority == 9
    done = station.broadcasting.wait_acks(stopped.id, timeout_s=30)
    assert done.status == "acked", done.acks  # which device's answer is missing, if any
    for device in ("loa-1", "loa-3"):
        (played,) = station.wait_recordings(device, 1)
        assert played["key"] == sent.id
        assert played["samples"] / played["rate"] < 5.0  # cut by the stop
    assert [b.id for b in station.broadcasting.recent()] == [stopped.id, sent.id]


def test_bad_broadcasts_are_refused_before_anything_is_sent(station: Station, probe: Any) -> None:
    clip = station.tone(440, 0.5)

    def refused(**kw: Any) -> Invalid:
        args: dict[str, Any] = {"by": "bt", "clip_sha256": clip.sha256, **kw}
        targets = args.pop("targets", [ALL])
        with pytest.raises(Invalid) as caught:
            station.broadcasting.play_now(targets, **args)
        return caught.value

    assert refused(targets=[Target("group", "thon-9")]).code == "unknown_target"
    assert refused(targets=[]).code == "no_target"
    assert refused(clip_sha256="f" * 64).code == "unknown_clip"
    assert refused(clip_sha256=None).code == "bad_source"
    assert refused(stream_url="http://radio.example/vov1").code == "bad_source"
    assert refused(label="x" * 201).code == "bad_broadcast"
    assert refused(level="loud").code == "bad_level"
    stream = refused(clip_sha256=None, stream_url="ftp://radio.example/x", stream_duration_s=60)
    assert stream.code == "bad_broadcast" and stream.message_vi.startswith("Lệnh phát")
    assert station.broadcasting.recent() == []
    assert not [m for m in probe.messages if m.topic.endswith("/cmd")]


def _answer_in_one_batch(
    sessions: sessionmaker[Session], broadcasting: Broadcasting, devices: int
) -> tuple[list[str], dict[str, BroadcastInfo]]:
    """Three new broadcasts and ``devices`` acks as one ingest batch; the statements it ran."""
    big, two, wait = (f"{name}-{devices}" for name in ("big", "two", "wait"))
    speakers = [f"loa-{i:04d}" for i in range(devices)]
    with sessions.begin() as s:
        for bid, reached in ((big, speakers), (two, speakers[:2]), (wait, ["x", "y"])):
            s.add(BroadcastRow(id=bid, kind="play", targets=[], level="emergency", priority=9,
                               created_by="bt", created_ms=1, status="sent",
                               devices=reached))  # fmt: skip
    acks = [Item(d, "ack", Ack(cmd=big, ok=True, ts=10), 10) for d in speakers]
    acks[0] = Item(speakers[0], "ack", Ack(cmd=big, ok=False, error="busy", ts=10), 10)
    acks += [
        # the same command again through a second group: refused as a replay, ignored
        Item(speakers[1], "ack", Ack(cmd=big, ok=False, error="replay", ts=11), 11),
        Item(speakers[0], "ack", Ack(cmd=two, ok=False, error="expired", ts=12), 12),
        Item(speakers[1], "ack", Ack(cmd=two, ok=False, error="expired", ts=12), 12),
        Item("x", "ack", Ack(cmd=wait, ok=True, ts=13), 13),
        Item("x", "ack", Ack(cmd="not-a-broadcast", ok=True, ts=13), 13),
        Item("x", "ack", Ack(cmd=None, ok=False, error="bad_envelope", ts=13), 13),
    ]
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with sessions.begin() as s:
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", count)
        try:
            write_batch(s, acks, 20, touch=set(), on_acks=broadcasting.record_acks_in)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    return statements, {"big": broadcasting.get(big), "two": broadcasting.get(two),
                        "wait": broadcasting.get(wait)}  # fmt: skip


def test_a_batch_of_acks_is_recorded_in_as_many_statements_for_10_or_400_devices(
    sessions: sessionmaker[Session], site: Site, tmp_path: Path
) -> None:
    broadcasting = Broadcasting(sessions, site, ClipLibrary(sessions, tmp_path / "clips"),
                                publisher=None, clip_base_url="http://x")  # type: ignore[arg-type]  # fmt: skip
    few, _ = _answer_in_one_batch(sessions, broadcasting, 10)
    many, got = _answer_in_one_batch(sessions, broadcasting, 400)
    assert len(few) == len(many), many
    # after the ack log's inserts: lock the broadcasts, record, count, set the statuses
    assert sum("broadcast" in s for s in many) == 4, many
    big = got["big"]
    assert big.status == "partial" and big.answered and len(big.acks) == 400
    assert (big.acks[0].ok, big.acks[0].error, big.acks[0].acked_ms) == (False, "busy", 10)
    assert all(a.ok and a.error is None and a.acked_ms == 10 for a in big.acks[1:])
    assert got["two"].status == "refused"
    assert [a.error for a in got["two"].acks] == ["expired", "expired"]
    waiting = got["wait"]
    assert waiting.status == "sent" and [a.ok for a in waiting.acks] == [True, None]
    assert broadcasting.wait_acks(waiting.id, timeout_s=0) == waiting
