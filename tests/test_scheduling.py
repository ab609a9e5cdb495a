"""Schedules on both databases: checks, signed retained documents, the calendar, and
real agents playing what the controller scheduled.

The ``Station`` harness (also used by test_broadcasting and test_bulletins) is the
controller's broadcasting side wired as it will be in the app: a database, the
clip library behind a real clip server, and a real controller.bus.Bus on the
test's Mosquitto.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from broadcast.local_rules import BroadcastRules
from controller.bus import Bus
from controller.db.broadcast_tables import ClipRow, PublishedDocumentRow
from controller.db.engine import make_engine, session_factory, upgrade
from controller.fleet.behind_rules import ResendPolicy
from controller.fleet.ingest import Ingest
from controller.radio.broadcasting import Broadcasting
from controller.radio.clip_library import ClipInfo, ClipLibrary, Conflict, Invalid, NotFound
from controller.radio.clip_server import clip_router, site_authenticator
from controller.radio.resends import Resends
from controller.radio.schedule_calendar import ScheduleCalendar
from controller.radio.schedule_entries import EntryInput
from controller.radio.scheduling import Scheduling
from controller.radio.targets import Target
from controller.site.devices import add_device
from controller.site.directory import Site
from protocol.commands import ScheduleSet
from protocol.envelope import open_envelope, seal
from protocol.signing import Keyring
from tests.audio_helpers import dominant_hz, read_samples, tone_file
from tests.conftest import DEVICES
from tests.http_helpers import serve
from tests.signing_helpers import resign
from tests.timing import on_time

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
MIN = 60_000


def local_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp() * 1000)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def registered(site: Site) -> Site:
    """The conftest fleet in the registry, for tests that need no broker."""
    for device, (roles, groups) in DEVICES.items():
        add_device(site.dir, device, roles, groups, broker_host="127.0.0.1", broker_port=1883)
    return site


def add_clip(sessions: sessionmaker[Session], name: str, duration_ms: int) -> str:
    """A clip row of a known length: the calendar needs lengths, not audio."""
    sha = (name.encode().hex() * 64)[:64]
    with sessions.begin() as session:
        session.add(
            ClipRow(
                sha256=sha,
                title=name,
                duration_ms=duration_ms,
                format="mp3",
                size_bytes=1000,
                source="upload",
                lang="vi",
                created_by="test",
                created_ms=0,
            )
        )
    return sha


NOW = local_ms("2026-11-30T12:00:00")


@pytest.fixture
def scheduling(sessions: sessionmaker[Session], registered: Site) -> Scheduling:
    return Scheduling(
        sessions, registered, clip_base_url="http://ctl.example:8080", clock=lambda: NOW
    )


def entry(target: str, clip: str, dtstart: str, **kw: Any) -> EntryInput:
    kind, _, ident = target.partition(":")
    return EntryInput(
        target_kind=kind,  # type: ignore[arg-type]
        target_id=ident,
        clip_sha256=clip,
        dtstart=dtstart,
        rrule=kw.pop("rrule", "FREQ=DAILY"),
        **kw,
    )


def test_calendar_and_conflict_preview_for_a_hand_checked_morning(
    scheduling: Scheduling, sessions: sessionmaker[Session]
) -> None:
    ten, five, two, one = (
        add_clip(sessions, n, m * MIN)
        for n, m in (("ten", 10), ("five", 5), ("two", 2), ("one", 1))
    )
    a = scheduling.create(entry("group:thon-1", ten, "2026-12-01T07:00:00", item_id="a"), by="bt")
    scheduling.create(
        entry("device:loa-1", two, "2026-12-01T07:05:00", item_id="b", level="priority"), by="bt"
    )
    scheduling.create(entry("group:all", five, "2026-12-01T07:08:00", item_id="c"), by="bt")
    assert a.priority == 2 and a.version == 1 and a.target == Target("group", "thon-1")
    day = local_ms("2026-12-01T00:00:00")
    calendar = ScheduleCalendar(scheduling)
    plans = {p.device: p for p in calendar.plans(day, day + 86_400_000)}
    assert sorted(plans) == ["loa-1", "loa-2", "loa-3"]  # speakers only: no kiosk
    at = local_ms

    def rows(device: str) -> list[tuple[Any, ...]]:
        return [(r.item_id, r.outcome, r.start_ms, r.end_ms) for r in plans[device].rows]

    # loa-1: its own priority item cuts the village bulletin, whose rest plays after it
    # (resume_preempted); the "all" item then has too little left and is missed
    assert rows("loa-1") == [
        ("a", "preempted", at("2026-12-01T07:00:00"), at("2026-12-01T07:05:00")),
        ("b", "completed", at("2026-12-01T07:05:00"), at("2026-12-01T07:07:00")),
        ("c", "missed", None, None),
    ]
    assert plans["loa-1"].rows[0].preempted_by == "b@2026-12-01T07:05:00"
    assert plans["loa-1"].rows[0].rests == ((at("2026-12-01T07:07:00"), at("2026-12-01T07:12:00")),)
    assert plans["loa-1"].rows[1].source == "xaso/dev/loa-1/schedule"
    # loa-3 (thon-1, no own item): the "all" item waits for the village bulletin, then
    # is joined two minutes in, so it still ends at 07:13 (broadcast.audio.lateness)
    assert rows("loa-3") == [
        ("a", "completed", at("2026-12-01T07:00:00"), at("2026-12-01T07:10:00")),
        ("c", "completed", at("2026-12-01T07:10:00"), at("2026-12-01T07:13:00")),
    ]
    assert plans["loa-3"].rows[1].offset_ms == 2 * MIN
    assert rows("loa-2") == [
        ("c", "completed", at("2026-12-01T07:08:00"), at("2026-12-01T07:13:00"))
    ]
    conflicts = {
        p.device: [r.key for r in p.rows] for p in calendar.conflicts(day, day + 86_400_000)
    }
    assert conflicts == {
        "loa-1": ["a@2026-12-01T07:00:00", "c@2026-12-01T07:08:00"],
        "loa-3": ["c@2026-12-01T07:08:00"],
    }
    # the preview of an entry not saved yet: an emergency at 07:01 for loa-3
    proposed = entry("device:loa-3", one, "2026-12-01T07:01:00", item_id="d", level="emergency")
    preview = calendar.plans(day, day + 86_400_000, devices=["loa-3"], proposed=proposed)
    assert [(r.item_id, r.outcome, r.end_ms) for r in preview[0].rows] == [
        ("a", "preempted", at("2026-12-01T07:01:00")),  # its rest: 07:02 to 07:11
        ("d", "completed", at("2026-12-01T07:02:00")),
        ("c", "missed", None),
    ]
    assert len(scheduling.entries()) == 3  # the preview wrote nothing
    # local rules (DOMAIN.md): at most one session of 5 minutes a day
    ruled = ScheduleCalendar(
        scheduling, rules=BroadcastRules(max_sessions_per_day=1, max_session_minutes=5)
    )
    found = {p.device: p.violations for p in ruled.conflicts(day, day + 86_400_000)}
    assert "loa-2" not in found and found["loa-3"] == [
        "2026-12-01 07:00: a session of 13 min, at most 5"
    ]


def test_bad_entries_are_refused_with_clear_bilingual_errors(
    scheduling: Scheduling, sessions: sessionmaker[Session]
) -> None:
    clip = add_clip(sessions, "clip", 30_000)

    def refused(kind: type[Exception], **changes: Any) -> Any:
        base: dict[str, Any] = {
            "target_kind": "group",
            "target_id": "thon-1",
            "clip_sha256": clip,
            "dtstart": "2026-12-01T07:00:00",
            "rrule": "FREQ=DAILY",
        }
        with pytest.raises(kind) as caught:
            scheduling.create(EntryInput(**{**base, **changes}), by="bt")
        return caught.value

    assert refused(Invalid, target_id="thon-9").code == "unknown_target"
    assert refused(Invalid, target_kind="device", target_id="kiosk-1").code == "unknown_target"
    assert refused(Invalid, target_id="Thôn 1").code == "bad_target"
    bad_rule = refused(Invalid, rrule="FREQ=SOMETIMES")
    assert bad_rule.code == "bad_entry" and "not RFC 5545" in bad_rule.message_en
    assert bad_rule.message_vi.startswith("Lịch phát không hợp lệ")
    assert refused(Invalid, rrule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30").code == "never_fires"
    assert refused(Invalid, clip_sha256="0" * 64).code == "unknown_clip"
    assert refused(Invalid, label="x" * 201).code == "bad_entry"
    assert refused(Invalid, rrule="FREQ=DAILY;" + "BYHOUR=7;" * 120).code == "bad_entry"
    assert refused(Invalid, exdates=["2026-12-02T07:00:00"] * 1001).code == "bad_entry"
    assert refused(Invalid, dtstart="tomorrow 7am").code == "bad_entry"
    assert refused(Invalid, tz="Asia/Hanoi-ish").code == "bad_entry"
    assert refused(Invalid, level="priority", priority=2).code == "bad_priority"
    both = refused(Invalid, stream_url="http://radio.example/vov1", stream_duration_s=60)
    assert "exactly one of 'clip' or 'stream'" in both.message_en
    past = refused(Invalid, dtstart="2026-11-01T07:00:00", rrule="FREQ=DAILY;COUNT=3")
    assert past.code == "never_plays"
    assert scheduling.entries() == []
    kept = scheduling.create(EntryInput(**{**_base(clip), "item_id": "sang"}), by="bt")
    assert refused(Conflict, item_id="sang").code == "item_id_taken"
    with pytest.raises(Conflict):
        scheduling.update(kept.id, EntryInput(**_base(clip)), by="bt", expected_version=7)
    with pytest.raises(NotFound):
        scheduling.get(kept.id + 100)


def _base(clip: str) -> dict[str, Any]:
    return {
        "target_kind": "group",
        "target_id": "thon-1",
        "clip_sha256": clip,
        "dtstart": "2026-12-01T07:00:00",
        "rrule": "FREQ=DAILY",
    }


def test_a_document_that_would_not_fit_in_one_message_is_refused(
    scheduling: Scheduling, sessions: sessionmaker[Session]
) -> None:
    clip = add_clip(sessions, "clip", 30_000)
    skip = [f"2027-{m:02d}-{d:02d}T07:00:00" for m in range(1, 13) for d in range(1, 29)][:1000]
    made = 0
    with pytest.raises(Invalid) as refused:
        for _ in range(40):
            scheduling.create(EntryInput(**{**_base(clip), "exdates": skip}), by="bt")
            made += 1
    assert refused.value.code == "document_too_large" and "262144" in refused.value.message_en
    assert 5 < made == len(scheduling.entries())  # the refused one was not kept


def test_a_clip_in_a_schedule_cannot_be_deleted(
    scheduling: Scheduling, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    library = ClipLibrary(sessions, tmp_path / "clips")
    clip = library.upload(tone_file(tmp_path / "t.wav", 440, 0.5), title="Tone", created_by="bt")
    kept = scheduling.create(EntryInput(**_base(clip.sha256)), by="bt")
    with pytest.raises(Conflict) as refused:
        library.delete(clip.sha256)
    assert refused.value.code == "clip_in_use" and "1 schedule entries" in refused.value.message_en
    scheduling.delete(kept.id, by="bt")
    library.delete(clip.sha256)


# end to end: the Station harness


class Station:
    def __init__(
        self, fleet: Any, sessions: sessionmaker[Session], base_url: str, bus: Bus
    ) -> None:
        self.fleet = fleet
        self.site = fleet.site
        self.tmp: Path = fleet.tmp
        self.bus = bus
        self.library = ClipLibrary(sessions, self.tmp / "clips")
        self.scheduling = Scheduling(sessions, self.site, clip_base_url=base_url, publisher=bus)
        self.broadcasting = Broadcasting(
            sessions, self.site, self.library, bus, clip_base_url=base_url, lead_ms=4000
        )
        # as controller/radio/station.py: ingest's writer records the broadcasts' acks
        self.ingest = Ingest(bus, sessions, on_acks=self.broadcasting.record_acks_in)
        self.ingest.start()

    def tone(self, freq_hz: float, seconds: float) -> ClipInfo:
        src = tone_file(self.tmp / f"tone-{freq_hz}.wav", freq_hz, seconds)
        return self.library.upload(src, title=f"Tone {freq_hz} Hz", created_by="bt")

    def spawn(self, *devices: str) -> None:
        for device in devices:
            played = self.tmp / "played" / device
            self.fleet.spawn(device, sections={"speaker": {"sink": "wav", "wav_dir": str(played)}})

    def recordings(self, device: str) -> list[dict[str, Any]]:
        log = self.tmp / "played" / device / "played.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def wait_recordings(self, device: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.recordings(device)
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{device}: {len(self.recordings(device))} recordings, not {count}")

    def pitch(self, device: str, recording: dict[str, Any]) -> float:
        rate, samples = read_samples(self.tmp / "played" / device / recording["file"])
        return dominant_hz(samples, rate)


@pytest.fixture
def station(fleet: Any, sessions: sessionmaker[Session], broker: Any) -> Iterator[Station]:
    app = FastAPI()
    app.include_router(clip_router(fleet.tmp / "clips", site_authenticator(fleet.site.dir)))
    user, password = fleet.site.controller_credentials()
    bus = Bus(broker.host, broker.port, user, password, client_id="xaso-controller-test")
    bus.start()
    with serve(app) as base:
        made = Station(fleet, sessions, base, bus)
        yield made
    bus.close()
    made.ingest.close()


def test_a_group_schedule_is_published_signed_and_retained_and_its_speakers_play_it(
    station: Station, probe: Any
) -> None:
    clip = station.tone(440, 1.0)
    station.spawn("loa-1", "loa-3")
    probe.status_is("loa-1", "online")
    probe.status_is("loa-3", "online")
    start = (datetime.now(TZ) + timedelta(seconds=12)).replace(microsecond=0, tzinfo=None)
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
    # the retained document: signed by the site's key, its one item, a growing version
    fresh = station.fleet.probe()  # subscribes after the publish: gets the retained copy
    doc = fresh.wait_for(lambda m: m.topic == "xaso/grp/thon-1/schedule" and m.retain)
    keys = Keyring.from_mapping(station.site.trusted_keys())
    opened = open_envelope(doc.payload, keys, planned_ms)
    assert opened.envelope.type == "schedule.set" and opened.envelope.exp is None
    assert [i.id for i in opened.body.items] == [made.item_id]  # type: ignore[attr-defined]
    for device in ("loa-1", "loa-3"):
        ack = probe.ack_for(device, opened.envelope.id)
        assert ack["ok"] and ack["result"] == {"version": opened.envelope.version}
    for device in ("loa-1", "loa-3"):
        (played,) = station.wait_recordings(device, 1)
        assert played["key"] == f"{made.item_id}@{start.isoformat()}"
        assert on_time(played["started_ms"], planned_ms), (played, planned_ms)
        assert abs(station.pitch(device, played) - 440) < 10
    # an edit is a new document at a higher version on the same retained topic
    station.scheduling.update(
        made.id, EntryInput(**{**_entry_fields(made), "label": "Đổi tên"}), by="bt"
    )
    versions = [
        json.loads(m.payload)["body"]["version"]
        for m in probe.wait_on("xaso/grp/thon-1/schedule", 2)
    ]
    assert len(versions) == 2 and versions[1] > versions[0]
    with station.scheduling.sessions() as session:  # what resends compare devices' reports to
        kept = session.get(PublishedDocumentRow, "xaso/grp/thon-1/schedule")
        assert kept is not None and kept.version == versions[1]


def _entry_fields(made: Any) -> dict[str, Any]:
    return {
        "target_kind": made.target.kind,
        "target_id": made.target.id,
        "clip_sha256": made.clip_sha256,
        "dtstart": made.dtstart,
        "rrule": made.rrule,
        "item_id": made.item_id,
    }


class Recorder:
    """A publisher that keeps what it was given (no broker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s=10
    ) -> None:
        self.sent.append((topic, payload, retain))


def test_a_stored_document_signed_before_to_is_signed_again_when_resent(
    sessions: sessionmaker[Session], registered: Site
) -> None:
    topic = "xaso/grp/thon-1/schedule"
    key = registered.signing_key()
    body = {"version": 7, "tz": "Asia/Ho_Chi_Minh", "items": []}
    fresh = json.loads(seal("schedule.set", body, key, NOW - MIN, to=topic, cmd_id="old"))
    legacy = resign({k: v for k, v in fresh.items() if k != "to"}, key)  # as kept before `to`
    with sessions.begin() as session:
        session.add(
            PublishedDocumentRow(
                topic=topic,
                doc_type="schedule.set",
                version=7,
                envelope_id="old",
                payload=legacy.decode(),
                signed_ms=NOW - MIN,
                delivered_ms=NOW - MIN,
            )
        )
    sent = Recorder()
    resends = Resends(sessions, registered, sent, ResendPolicy(), clock=lambda: NOW)
    resends.resend(topic)
    ((where, payload, retained),) = sent.sent
    assert where == topic and retained
    keys = Keyring.from_mapping(registered.trusted_keys())
    opened = open_envelope(payload, keys, NOW)  # what an upgraded agent accepts live
    assert str(opened.envelope.to) == "grp/thon-1/schedule"
    assert opened.envelope.version == NOW > 7 and opened.envelope.id != "old"
    same = msgspec.structs.replace(msgspec.convert(body, ScheduleSet), version=opened.body.version)
    assert opened.body == same  # the same body
    with sessions() as session:
        row = session.get(PublishedDocumentRow, topic)
        assert row is not None and row.payload.encode() == payload and row.delivered_ms == NOW
    # the next resend is byte for byte again
    resends.resend(topic)
    assert sent.sent[1][1] == payload
