"""Ingest against the real broker, real agents and both databases.

Covers controller/fleet/ingest.py (bus handler, writer thread) and
controller/fleet/ingest_writes.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.bus import Bus
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import (
    AckRecord,
    Device,
    DeviceGroup,
    DeviceState,
    EventRecord,
    TelemetryRollup,
    TelemetrySample,
)
from controller.fleet.ingest import Ingest, share_group_for
from controller.fleet.ingest_writes import Item, sync_devices_from_site, write_batch
from controller.fleet.rollups import Retention, maintain, reclaim
from controller.site.devices import remove_device
from protocol.uplink import Ack, Event, Telemetry, read_uplink


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll until ``check()`` is truthy (the broker and the writer are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@dataclass
class Replica:
    bus: Bus
    ingest: Ingest


@pytest.fixture
def start_ingest(site, broker, sessions) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(name: str = "ingest-0", share_group: str | None = "ingest") -> Replica:
        user, password = site.controller_credentials()
        bus = Bus(broker.host, broker.port, user, password, client_id=name)
        ingest = Ingest(bus, sessions, share_group=share_group)
        ingest.start()
        bus.start()
        replica = Replica(bus, ingest)
        started.append(replica)
        return replica

    yield start
    for r in started:
        r.bus.close()
        r.ingest.close()


def count(sessions: sessionmaker[Session], stmt: Any) -> int:
    with sessions() as s:
        return int(s.scalar(stmt) or 0)


def event_json(event_id: str, event_type: str = "play.missed", **body: Any) -> bytes:
    """An event as an agent sends it: by default, a play.missed that fits its model."""
    if event_type == "play.missed":
        body = {"key": event_id, "reason": "late", **body}
    return json.dumps(
        {"id": event_id, "type": event_type, "ts": 1_763_800_000_000, "body": body}
    ).encode()


def test_an_agents_status_telemetry_and_events_land_in_the_database(
    fleet, site, sessions, start_ingest
):
    with sessions.begin() as s:
        sync_devices_from_site(site, s, 1)
    start_ingest()
    fleet.spawn("loa-1", telemetry_interval_s=1)

    def two_samples() -> bool:
        stmt = select(func.count()).where(TelemetrySample.device_id == "loa-1")
        return count(sessions, stmt) >= 2

    eventually(two_samples, what="two telemetry samples")
    with sessions() as s:
        state = s.get(DeviceState, "loa-1")
        assert state is not None and state.state == "online"
        assert state.telemetry is not None and state.telemetry["uptime_s"] > 0
        device = s.get(Device, "loa-1")
        assert device is not None and device.registered and device.roles == ["speaker"]
        assert device.first_seen_ms is not None and device.last_seen_ms is not None
    started = select(func.count()).where(
        EventRecord.device_id == "loa-1", EventRecord.type == "agent.started"
    )
    eventually(lambda: count(sessions, started) == 1, what="agent.started stored")


def test_two_replicas_store_each_event_once_however_often_delivered(fleet, sessions, start_ingest):
    replicas = [start_ingest("ingest-a"), start_ingest("ingest-b")]
    device = fleet.probe(as_device="loa-2", subscribe="xaso/dev/loa-2/cmd")
    ids = [uuid.uuid4().hex for _ in range(30)]
    for event_id in ids:
        for _ in range(3):  # a redelivery after a reconnect, a broker crash, an outbox resend
            device.publish("xaso/dev/loa-2/event", event_json(event_id))
    stored = select(func.count()).select_from(EventRecord)

    def all_handled() -> bool:
        received = sum(r.ingest.stats.received for r in replicas)
        return received == 90 and all(r.ingest.wait_idle(0) for r in replicas)

    eventually(all_handled, what="90 deliveries handled")
    assert count(sessions, stored) == 30
    with sessions() as s:
        assert set(s.scalars(select(EventRecord.event_id))) == set(ids)
    assert sum(r.ingest.stats.stored["event"] for r in replicas) == 30
    assert sum(r.ingest.stats.duplicate_events for r in replicas) == 60
    assert all(r.ingest.stats.received > 0 for r in replicas)  # the work was shared


def test_bad_payloads_are_counted_not_stored_and_misfit_event_bodies_are_kept(
    fleet, sessions, start_ingest
):
    replica = start_ingest()
    device = fleet.probe(as_device="loa-3", subscribe="xaso/dev/loa-3/cmd")
    bad = [
        ("telemetry", b"not json"),
        ("telemetry", b'{"ts": 1}'),  # uptime_s missing
        ("telemetry", b"[1, 2]"),
        ("event", b'{"id": "has space", "type": "play.missed", "ts": 1}'),
        ("event", b'{"id": "x", "type": "play.missed", "ts": -5}'),
        ("status", b'{"state": "sleeping", "ts": 1}'),
        ("ack", b'{"ok": "perhaps", "ts": 1}'),
        ("event", b"\xff\xfe"),
    ]
    # a known type whose body does not fit: counted, yet kept (the edge has let it go)
    misfits = [event_json("bad-body", reason=5), event_json("no-body", "ticket.called")]
    for leaf, payload in bad:
        device.publish(f"xaso/dev/loa-3/{leaf}", payload)
    for payload in misfits:
        device.publish("xaso/dev/loa-3/event", payload)
    device.publish("xaso/dev/loa-3/event", event_json("good-1"))
    # a type this controller does not know yet (a newer agent's) is kept as it came
    device.publish("xaso/dev/loa-3/event", event_json("newer", "door.opened", door=2))
    device.publish("xaso/dev/loa-3/ack", b'{"cmd": "c1", "ok": true, "ts": 5}')

    eventually(lambda: replica.ingest.stats.received == len(bad) + 5, what="all received")
    assert replica.ingest.wait_idle()
    assert replica.ingest.stats.bad == {
        "telemetry": 3, "event": 3, "status": 1, "ack": 1, "event_body": 2,
    }  # fmt: skip
    assert count(sessions, select(func.count()).select_from(TelemetrySample)) == 0
    with sessions() as s:
        stored = {e.event_id: (e.type, e.body) for e in s.scalars(select(EventRecord))}
        assert stored["good-1"] == ("play.missed", {"key": "good-1", "reason": "late"})
        assert stored["newer"] == ("door.opened", {"door": 2})
        assert stored["bad-body"][0] == "play.missed" and stored["no-body"][0] == "ticket.called"
        assert len(stored) == 4
        ack = s.scalars(select(AckRecord)).one()
        assert (ack.device_id, ack.cmd, ack.ok) == ("loa-3", "c1", True)
        state = s.get(DeviceState, "loa-3")
        assert state is not None and state.state is None  # the bad status was not applied


def test_the_will_marks_a_killed_agent_offline(fleet, sessions, start_ingest, probe):
    start_ingest()
    agent = fleet.spawn("loa-1")

    def state() -> str | None:
        with sessions() as s:
            row = s.get(DeviceState, "loa-1")
            return None if row is None else row.state

    eventually(lambda: state() == "online", what="online")
    agent.kill9()
    eventually(lambda: state() == "offline", what="offline from the Will")
    agent.start()
    eventually(lambda: state() == "online", what="online again")


def test_sync_mirrors_the_registry(site, broker, sessions):
    with sessions.begin() as s:
        sync_devices_from_site(site, s, 1)
    remove_device(site.dir, "loa-3")
    with sessions.begin() as s:
        sync_devices_from_site(site, s, 2)
    with sessions() as s:
        devices = {d.id: d for d in s.scalars(select(Device))}
        links = {(g.device_id, g.group_id) for g in s.scalars(select(DeviceGroup))}
    assert set(devices) == {"loa-1", "loa-2", "loa-3", "kiosk-1"}
    assert not devices["loa-3"].registered and devices["loa-1"].registered
    assert devices["kiosk-1"].roles == ["kiosk"]
    assert links == {("loa-1", "thon-1"), ("loa-1", "all"), ("loa-2", "thon-2"), ("loa-2", "all")}


def _sample(device: str, received_ms: int, temp: float) -> Item:
    t = Telemetry(ts=received_ms, uptime_s=1, cpu_temp_c=temp)
    return Item(device, "telemetry", t, received_ms)


def test_downsampling_and_retention(sessions):
    hour = 3_600_000
    base = 1_700_000_400_000 // hour * hour  # on an hour boundary
    temps = {0: 40.0, 60_000: 50.0, 299_999: 60.0, 300_000: 70.0, hour + 1: 80.0}
    with sessions.begin() as s:
        write_batch(s, [_sample("loa-1", base + dt, v) for dt, v in temps.items()], base)
        write_batch(s, [Item("loa-1", "event", Event(id="e1", type="play.missed", ts=1), base)], 0)

    with sessions.begin() as s:
        maintain(s, base + 2 * hour + 120_000)
    with sessions() as s:
        rows = {
            (r.period_s, r.bucket_ms - base): (
                r.samples,
                r.cpu_temp_c_min,
                r.cpu_temp_c_avg,
                r.cpu_temp_c_max,
                r.load1_avg,
            )
            for r in s.execute(select(TelemetryRollup.__table__))
        }
    assert rows == {  # in tenths of a degree; load1 was not sent: null, not 0
        (300, 0): (3, 400, 500, 600, None),
        (300, 300_000): (1, 700, 700, 700, None),
        (300, hour): (1, 800, 800, 800, None),
        (3600, 0): (4, 400, 550, 700, None),
        (3600, hour): (1, 800, 800, 800, None),
    }
    with sessions.begin() as s:  # a second run (another replica) changes nothing
        again = maintain(s, base + 2 * hour + 120_000)
    assert again["rollups_300s"] == 0 and again["samples_deleted"] == 0

    eight_days = base + 8 * 24 * hour
    with sessions.begin() as s:
        done = maintain(s, eight_days, Retention(raw_days=7))
    assert done["samples_deleted"] == 5
    assert count(sessions, select(func.count()).select_from(TelemetrySample)) == 0
    assert count(sessions, select(func.count()).select_from(TelemetryRollup)) > 0
    assert count(sessions, select(func.count()).select_from(EventRecord)) == 1  # events stay

    with sessions.begin() as s:  # past the 5-min roll-ups' 14 days, within the hourly 730
        done = maintain(s, base + 15 * 24 * hour)
    assert done["rollups_300s_deleted"] == 3 and done["rollups_3600s_deleted"] == 0
    with sessions.begin() as s:
        done = maintain(s, base + 731 * 24 * hour)
    assert done["rollups_3600s_deleted"] == 2
    assert count(sessions, select(func.count()).select_from(TelemetryRollup)) == 0


def test_pruning_gives_the_pages_back_to_the_file_system(tmp_path):
    """SQLite: a new file is auto_vacuum=INCREMENTAL, and maintain() frees what it prunes;
    an old file (auto_vacuum off) is converted once by the upgrade."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sqlalchemy.create_engine(url)  # as a file made before: no auto_vacuum
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE filler (x BLOB)")
        conn.exec_driver_sql("INSERT INTO filler VALUES (zeroblob(100000))")
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 0
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2  # INCREMENTAL
    hour = 3_600_000
    base = 1_700_000_400_000 // hour * hour
    with sessions.begin() as s:
        samples = [_sample(f"loa-{n % 20}", base + n * 1000, 40 + n % 30) for n in range(20_000)]
        write_batch(s, samples, base)
    with sessions.begin() as s:
        maintain(s, base + 6 * hour)
    pages = _pages(engine)
    with sessions.begin() as s:
        done = maintain(s, base + 800 * 24 * hour)
    assert done["samples_deleted"] == 20_000 and done["rollups_3600s_deleted"] > 0
    assert _pages(engine)[1] > 100  # freed, still the file's
    assert reclaim(engine) > 100
    after = _pages(engine)
    assert after[1] == 0, "pruned pages left on the free list"
    assert after[0] < pages[0] - 100, f"the file did not shrink: {pages} -> {after} pages"
    engine.dispose()


def _pages(engine: sqlalchemy.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        return pages, conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()


def test_a_large_batch_stores_every_sample_and_the_latest_state(sessions):
    """More rows than one multi-row INSERT holds, and a NaN (which PostgreSQL's json refuses)."""
    base = 1_700_000_000_000
    batch = []
    for n in range(1203):
        device = f"loa-{n % 7}"
        payload = json.dumps({"ts": base + n, "uptime_s": n, "cpu_temp_c": 40.0 + n % 7}).encode()
        batch.append(Item(device, "telemetry", read_uplink(payload, Telemetry), n, payload))
    nan = b'{"ts": 1800000000000, "uptime_s": NaN, "cpu_temp_c": 99.5}'
    batch.append(Item("loa-0", "telemetry", read_uplink(nan, Telemetry), 9999, nan))
    with sessions.begin() as s:
        counts = write_batch(s, batch, base)
    assert counts["telemetry"] == 1204
    assert count(sessions, select(func.count()).select_from(TelemetrySample)) == 1204
    with sessions() as s:
        temps = sorted(s.scalars(select(TelemetrySample.cpu_temp_c).distinct()))
        assert temps == [40.0, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0, 99.5]
        latest = s.get(DeviceState, "loa-0")
        assert latest is not None and latest.cpu_temp_c == 99.5
        assert latest.telemetry is not None and latest.telemetry["uptime_s"] is None
        other = s.get(DeviceState, "loa-3")  # its last sample is n = 1200, kept as sent
        assert other is not None
        assert other.telemetry == {"ts": base + 1200, "uptime_s": 1200, "cpu_temp_c": 43.0}


def test_nan_in_an_event_body_or_an_ack_result_does_not_lose_the_batch(sessions):
    """The uplink reads NaN (Python writes it); PostgreSQL's json refuses it in any row."""
    event = b'{"id": "e-nan", "type": "play.finished", "ts": 1800000000000, "body": {"x": NaN}}'
    ack = b'{"cmd": "c-1", "ok": true, "ts": 1800000000000, "result": {"gain": Infinity}}'
    fine = b'{"id": "e-ok", "type": "play.finished", "ts": 1800000000001, "body": {"x": 1}}'
    batch = [
        Item("loa-1", "event", read_uplink(event, Event), 1, event),
        Item("loa-1", "ack", read_uplink(ack, Ack), 1, ack),
        Item("loa-1", "event", read_uplink(fine, Event), 1, fine),
    ]
    with sessions.begin() as s:
        write_batch(s, batch, 1_800_000_000_000)
    with sessions() as s:
        bodies = {e.event_id: e.body for e in s.scalars(select(EventRecord))}
        assert bodies == {"e-nan": {"x": None}, "e-ok": {"x": 1}}
        assert s.scalars(select(AckRecord)).one().result == {"gain": None}


def test_handle_waits_instead_of_queueing_without_bound(sessions):
    """Until the writer catches up, the bus handler stops at max_pending: backpressure."""
    ingest = Ingest(None, sessions, max_pending=3)  # type: ignore[arg-type]  # no bus needed
    payloads = [b'{"ts": %d, "uptime_s": 1}' % (1_800_000_000_000 + n) for n in range(4)]
    for payload in payloads[:3]:
        ingest.handle("xaso/dev/loa-1/telemetry", payload)
    fourth = threading.Thread(
        target=ingest.handle, args=("xaso/dev/loa-1/telemetry", payloads[3]), daemon=True
    )
    fourth.start()
    fourth.join(0.5)
    assert fourth.is_alive()  # held back while three wait for the writer
    ingest.start_writer()
    fourth.join(30)
    assert not fourth.is_alive() and ingest.wait_idle()
    ingest.close()
    assert count(sessions, select(func.count()).select_from(TelemetrySample)) == 4


def test_a_device_that_joins_the_shared_group_takes_nothing_from_ingest(
    fleet, site, sessions, start_ingest
):
    """Issue 12: a device may join any shared group it names, and the broker deals it
    a share it may not read; the controller's group is not one a device can name."""
    _, password = site.controller_credentials()
    group = share_group_for(password)
    assert password not in group and group == share_group_for(password)
    assert group != share_group_for(password + "x")
    thieves = [
        fleet.probe(as_device="loa-2", subscribe=f"$share/{name}/xaso/dev/+/event")
        for name in ("ingest", "ingest-0", "xaso", "controller")
    ]
    start_ingest(share_group=group)
    device = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")
    ids = [f"steal-{n}" for n in range(40)]
    for event_id in ids:
        device.publish("xaso/dev/loa-1/event", event_json(event_id))

    def stored() -> set[str]:
        with sessions() as s:
            return set(s.scalars(select(EventRecord.event_id)))

    deadline = time.monotonic() + 30
    while stored() != set(ids):
        assert time.monotonic() < deadline, f"{len(stored())} of {len(ids)} events stored"
        time.sleep(0.1)
    assert all(not t.messages for t in thieves)
