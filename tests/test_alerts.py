"""The alert engine end to end: real agents, the real broker, ingest, both databases and
a real HTTP webhook (controller/fleet/alerts.py; the queue itself: tests/test_webhooks.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.bus import Bus
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import Alert, Device, DeviceState, EventRecord, WebhookDelivery
from controller.fleet.alert_rules import (
    DEAD_AIR,
    MINUTE_MS,
    OFFLINE,
    PAPER_OUT,
    TEMP_HIGH,
    AlertSpec,
    Thresholds,
)
from controller.fleet.alerts import AlertEngine
from controller.fleet.ingest import Ingest
from controller.fleet.ingest_writes import sync_devices_from_site
from controller.fleet.webhooks import WebhookSender
from tests.test_ingest import eventually
from tests.webhook_helpers import Clock, Receiver


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def ingest(site, broker, sessions) -> Iterator[Ingest]:
    with sessions.begin() as s:
        sync_devices_from_site(site, s, 1)
    user, password = site.controller_credentials()
    bus = Bus(broker.host, broker.port, user, password, client_id="ingest-alerts")
    ingest = Ingest(bus, sessions)
    ingest.start()
    bus.start()
    yield ingest
    bus.close()
    ingest.close()


def state_of(sessions: sessionmaker[Session], device: str) -> DeviceState | None:
    with sessions() as s:
        return s.get(DeviceState, device)


def open_alerts(sessions: sessionmaker[Session]) -> set[tuple[str, str]]:
    with sessions() as s:
        rows = s.scalars(select(Alert).where(Alert.cleared_ms.is_(None)))
        return {(a.kind, a.device_id) for a in rows}


def stored(sessions: sessionmaker[Session], event_id: str) -> bool:
    with sessions() as s:
        return s.scalar(select(EventRecord).where(EventRecord.event_id == event_id)) is not None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_killed_agent_raises_offline_after_n_minutes_and_clears_on_return(
    fleet, sessions, ingest
):
    agent = fleet.spawn("loa-1")
    eventually(lambda: (s := state_of(sessions, "loa-1")) and s.state == "online")
    agent.kill9()
    eventually(lambda: (s := state_of(sessions, "loa-1")) and s.state == "offline")
    went = state_of(sessions, "loa-1").changed_ms

    with Receiver() as hook:
        engine = AlertEngine(sessions, Thresholds(offline_after_min=2), webhooks=True)
        clock = Clock(went + 2 * MINUTE_MS)
        sender = WebhookSender(sessions, hook.url, clock)
        assert engine.run(clock.ms - 1).raised == []
        changes = engine.run(clock.ms)
        assert [(a.kind, a.device_id) for a in changes.raised] == [(OFFLINE, "loa-1")]
        assert sender.send_due() == 1
        assert [p.what for p in hook.posts] == [("raised", OFFLINE, "loa-1")]
        assert hook.posts[0].body["alert"]["message_vi"].startswith("Thiết bị loa-1 mất kết nối")
        # still offline: nothing new, no second row, no second POST
        assert engine.run(went + 3 * MINUTE_MS).raised == []
        assert sender.send_due() == 0
        assert open_alerts(sessions) == {(OFFLINE, "loa-1")}

        agent.start()
        eventually(lambda: (s := state_of(sessions, "loa-1")) and s.state == "online")
        clock.ms = max(now_ms(), clock.ms)
        changes = engine.run(clock.ms)
        assert [(a.kind, a.device_id) for a in changes.cleared] == [(OFFLINE, "loa-1")]
        assert sender.send_due() == 1
        assert [p.what for p in hook.posts] == [
            ("raised", OFFLINE, "loa-1"),
            ("cleared", OFFLINE, "loa-1"),
        ]
    assert open_alerts(sessions) == set()
    with sessions() as s:
        assert [d.status for d in s.scalars(select(WebhookDelivery))] == ["sent", "sent"]


def test_a_printer_out_of_paper_raises_and_clears(fleet, sessions, ingest):
    kiosk = fleet.probe(as_device="kiosk-1", subscribe="xaso/dev/kiosk-1/cmd")

    def printer_status(event_id: str, ts: int, paper: str) -> bytes:
        body = {"online": True, "paper": paper, "cover": "closed", "pending": ["A001"]}
        return json.dumps(
            {"id": event_id, "type": "printer.status", "ts": ts, "body": body}
        ).encode()

    t0 = now_ms()
    kiosk.publish("xaso/dev/kiosk-1/event", printer_status("p1", t0, "out"))
    eventually(lambda: (s := state_of(sessions, "kiosk-1")) and s.printer_ms == t0)
    engine = AlertEngine(sessions)
    raised = engine.run(now_ms()).raised
    assert [(a.kind, a.device_id) for a in raised] == [(PAPER_OUT, "kiosk-1")]
    assert raised[0].message_vi.startswith("Máy in kiosk-1 hết giấy: thay cuộn giấy mới")
    assert raised[0].details == {"pending": ["A001"]}

    kiosk.publish("xaso/dev/kiosk-1/event", printer_status("p2", t0 + 1, "ok"))
    eventually(lambda: (s := state_of(sessions, "kiosk-1")) and s.printer_ms == t0 + 1)
    assert [(a.kind, a.device_id) for a in engine.run(now_ms()).cleared] == [(PAPER_OUT, "kiosk-1")]

    # a newer body that does not fit printer.status is kept with the events, but drives
    # neither the printer state nor the alerts (which would choke on pending = 5)
    misfit = json.dumps({"id": "p3", "type": "printer.status", "ts": t0 + 2,
                         "body": {"paper": "out", "pending": 5}}).encode()  # fmt: skip
    kiosk.publish("xaso/dev/kiosk-1/event", misfit)
    eventually(lambda: ingest.stats.bad["event_body"] == 1)
    assert ingest.wait_idle()
    state = state_of(sessions, "kiosk-1")
    assert state is not None and state.printer_ms == t0 + 1 and state.printer["paper"] == "ok"
    assert engine.run(now_ms()).raised == []


def add_offline_device(sessions: sessionmaker[Session], device: str) -> None:
    with sessions.begin() as s:
        s.add(Device(id=device))
        s.flush()
        s.add(DeviceState(device_id=device, state="offline", changed_ms=0, updated_ms=0))


def test_two_replicas_raise_one_alert(sessions):
    add_offline_device(sessions, "loa-3")
    replicas = [AlertEngine(sessions, Thresholds(offline_after_min=1)) for _ in range(2)]
    raised = [len(r.run(MINUTE_MS).raised) for r in replicas]
    assert raised == [1, 0]
    # even if both decide at once, the open-alert index lets one insert through
    spec = AlertSpec(OFFLINE, "loa-3", "critical", "vi", "en")
    with sessions.begin() as s:
        assert replicas[1]._raise(s, spec, MINUTE_MS) is None
    assert open_alerts(sessions) == {(OFFLINE, "loa-3")}


def test_dead_air_on_a_relay_raises_its_alert_in_vietnamese(fleet, sessions, ingest):
    """The speaker's audio.fault for dead air (tests/test_stream_relay.py makes it from a
    silent stream) goes through the broker and ingest, and the engine raises the alert."""
    speaker = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")
    body = {"reason": "dead_air", "key": "vov",
            "detail": "the stream was silent (below -50 dBFS) for 15 s"}  # fmt: skip
    event = {"id": "f1", "type": "audio.fault", "ts": now_ms(), "body": body}
    speaker.publish("xaso/dev/loa-1/event", json.dumps(event).encode())
    eventually(lambda: stored(sessions, "f1"))
    (alert,) = AlertEngine(sessions).run(now_ms()).raised
    assert (alert.kind, alert.device_id) == (DEAD_AIR, "loa-1")
    assert alert.message_vi.startswith("loa-1: luồng tiếp sóng mất tiếng 1 lần")
    assert "kiểm tra nguồn phát" in alert.message_vi
    assert alert.details["recent"][0]["key"] == "vov"


def test_a_run_sees_what_changed_since_the_last_one_and_forgets_a_removed_device(sessions):
    """The engine keeps last run's snapshot of an unchanged row: a changed reading must
    still be seen, and a device whose rows went must lose its alerts."""
    with sessions.begin() as s:
        for device in ("loa-4", "loa-5"):
            s.add(Device(id=device, last_seen_ms=MINUTE_MS))
            s.flush()
            s.add(DeviceState(device_id=device, state="online", changed_ms=0, cpu_temp_c=50.0))
    engine = AlertEngine(sessions, Thresholds(temp_high_c=75.0))
    assert engine.run(MINUTE_MS).raised == []
    with sessions.begin() as s:
        s.get_one(DeviceState, "loa-5").cpu_temp_c = 80.0
    assert [(a.kind, a.device_id) for a in engine.run(MINUTE_MS + 1).raised] == [
        (TEMP_HIGH, "loa-5")
    ]
    assert engine.run(MINUTE_MS + 2).raised == []  # unchanged: kept, and still open
    assert open_alerts(sessions) == {(TEMP_HIGH, "loa-5")}
    with sessions.begin() as s:
        s.delete(s.get_one(DeviceState, "loa-5"))
    cleared = engine.run(MINUTE_MS + 3).cleared
    assert [(a.kind, a.device_id) for a in cleared] == [(TEMP_HIGH, "loa-5")]
