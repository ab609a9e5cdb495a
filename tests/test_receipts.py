"""Receipts (docs/delivery.md): the edge keeps each event until the controller's
receipt names it, and the controller receipts what it committed.

The store's rules on a real SQLite file; the agent in-process against a real
Mosquitto, with a probe holding the controller's credentials; ingest with a
real Bus on both databases, one replica and two on a shared subscription.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from alembic import command
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from controller.bus import Bus
from controller.db.engine import alembic_config, make_engine, session_factory, upgrade
from controller.db.fleet_tables import EventRecord, TelemetrySample
from controller.fleet.ingest import Ingest
from controller.fleet.ingest_writes import Item, write_batch
from edge.agent import Agent
from edge.config import load_config
from edge.store import LocalStore
from protocol.events import PlayMissed
from protocol.receipts import RECEIPT_MAX_IDS, Receipt, receipts_for
from protocol.uplink import Telemetry
from tests.fleet import Probe

NOW = 1_800_000_000_000


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


# the store


def test_an_outbox_made_by_an_older_agent_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "agent.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, qos INTEGER NOT NULL, created_ms INTEGER NOT NULL)"
    )
    old.execute(
        "INSERT INTO outbox (topic, payload, qos, created_ms) VALUES ('t', ?, 1, 1)", (b"m",)
    )
    old.commit()
    old.close()
    store = LocalStore(path)
    try:
        rows = store.outbox_batch(0, 10)
        assert [(r.payload, r.event_id) for r in rows] == [(b"m", None)]  # sent, then deleted
        store.outbox_put("t", b"e", 1, NOW, "ev-1")
        assert [r.event_id for r in store.outbox_batch(0, 10)] == [None, "ev-1"]
    finally:
        store.close()


def test_a_row_waits_longer_after_each_resend_and_a_reconnect_brings_it_back(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "a.db")
    timeout, cap = 1000, 3000
    try:
        seq = store.outbox_put("t", b"e", 1, NOW, "ev-1")
        store.outbox_sent([seq], NOW)
        assert store.outbox_batch(0, 10) == []  # the broker has it: not sent as new again
        assert store.outbox_due(NOW + timeout - 1, timeout, cap, 10) == []
        assert [r.seq for r in store.outbox_due(NOW + timeout, timeout, cap, 10)] == [seq]
        store.outbox_sent([seq], NOW + timeout, resent=True)  # the first resend
        assert store.outbox_due(NOW + 3 * timeout - 1, timeout, cap, 10) == []
        assert store.outbox_due(NOW + 3 * timeout, timeout, cap, 10) != []
        for _ in range(2, 30):  # doubling, but never longer than the cap (and no overflow)
            store.outbox_sent([seq], NOW, resent=True)
        assert store.outbox_due(NOW + cap - 1, timeout, cap, 10) == []
        assert store.outbox_due(NOW + cap, timeout, cap, 10) != []
        store.outbox_reset_tries()
        assert store.outbox_due(NOW + timeout, timeout, cap, 10) != []
        assert store.outbox_awaiting() == store.outbox_len() == 1
    finally:
        store.close()


def test_a_receipt_deletes_the_rows_it_names_and_no_other(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a.db")
    try:
        for event_id in ("a", "b", None):
            store.outbox_put("t", b"x", 1, NOW, event_id)
        assert store.outbox_receipted(["a", "never-sent", "a"]) == 1
        assert store.outbox_receipted([]) == 0
        assert sorted(str(r.event_id) for r in store.outbox_batch(0, 10)) == ["None", "b"]
    finally:
        store.close()
    store = LocalStore(tmp_path / "a.db")  # and it stays so after a reopen
    try:
        assert store.outbox_len() == 2
    finally:
        store.close()


def test_receipts_are_split_to_fit_and_list_each_id_once() -> None:
    ids = [f"e{n}" for n in range(RECEIPT_MAX_IDS + 5)] + ["e0"]
    messages = [msgspec.json.decode(m, type=Receipt) for m in receipts_for(ids, NOW)]
    assert [len(m.ids) for m in messages] == [RECEIPT_MAX_IDS, 5]
    assert [i for m in messages for i in m.ids] == ids[:-1]
    assert list(receipts_for([], NOW)) == []


# the agent


def _events(probe: Probe, device: str = "loa-1") -> list[str]:
    return [
        json.loads(m.payload)["id"]
        for m in list(probe.messages)
        if m.topic == f"xaso/dev/{device}/event"
    ]


@pytest.fixture
def agent(fleet: Any) -> Iterator[Agent]:
    agent = Agent(load_config(fleet.config("loa-1", receipt_timeout_s=1.0)))
    agent.start()
    yield agent
    agent.close()


def test_an_event_stays_until_its_receipt_and_is_sent_again_meanwhile(
    agent: Agent, probe: Probe
) -> None:
    probe.status_is("loa-1", "online", timeout=60)
    event_id = agent.emit(PlayMissed(key="k1", reason="test")).id
    probe.wait_until(lambda _: event_id in _events(probe), 60)
    assert agent.outbox.wait_sent(60)
    assert agent.store.outbox_len() >= 1  # the broker's PUBACK does not delete it
    # no receipt: the same event, with the same id, comes again (1 s, then 2 s, ...)
    probe.wait_until(lambda _: _events(probe).count(event_id) >= 2, 60)
    eventually(lambda: agent.outbox.resent >= 1, what="the resend counted")

    ids = list(dict.fromkeys(_events(probe)))  # agent.started too
    probe.publish("xaso/dev/loa-1/receipt", msgspec.json.encode(Receipt(ids=ids, ts=NOW)))
    assert agent.outbox.wait_empty(60)
    assert agent.telemetry().outbox_len == 0


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"not json", "bad_receipt"),
        (b'{"ids": [], "ts": 1}', "bad_receipt"),
        (b'{"ids": ["no spaces allowed"], "ts": 1}', "bad_receipt"),
        (b'{"ids": "ev", "ts": 1}', "bad_receipt"),
        (json.dumps({"ids": ["e"] * (RECEIPT_MAX_IDS + 1), "ts": 1}).encode(), "bad_receipt"),
    ],
)
def test_a_receipt_that_does_not_fit_deletes_nothing_and_is_counted(
    agent: Agent, probe: Probe, payload: bytes, kind: str
) -> None:
    probe.status_is("loa-1", "online", timeout=60)
    event_id = agent.emit(PlayMissed(key="k1", reason="test")).id
    assert agent.outbox.wait_sent(60)
    probe.publish("xaso/dev/loa-1/receipt", payload)
    eventually(lambda: agent.dispatcher.refused[kind] == 1, what="the receipt refused")
    assert event_id in {r.event_id for r in agent.store.outbox_due(2**53, 0, 0, 100)}
    good = msgspec.json.encode(Receipt(ids=[event_id], ts=NOW))
    probe.publish("xaso/dev/loa-1/receipt", good)  # and the agent still takes a good one
    eventually(
        lambda: event_id not in {r.event_id for r in agent.store.outbox_due(2**53, 0, 0, 100)},
        what="the good receipt taken",
    )


def test_another_device_cannot_receipt_for_a_device(agent: Agent, fleet: Any) -> None:
    intruder = fleet.probe(as_device="loa-2", subscribe="xaso/dev/loa-2/cmd")
    controller = fleet.probe()
    controller.status_is("loa-1", "online", timeout=60)
    event_id = agent.emit(PlayMissed(key="k1", reason="test")).id
    assert agent.outbox.wait_sent(60)
    forged = msgspec.json.encode(Receipt(ids=[event_id], ts=NOW))
    intruder.publish("xaso/dev/loa-1/receipt", forged)  # the broker acks, and drops it
    # the broker takes one client's messages in order: once the next one is through,
    # the forgery was dealt with, and a command sent now reaches the agent after it
    intruder.publish("xaso/dev/loa-2/event", b"marker")
    controller.wait_for(lambda m: m.payload == b"marker", 60)
    controller.publish("xaso/dev/loa-1/cmd", b"control")
    eventually(lambda: agent.dispatcher.refused["not_json"] >= 1, what="the control message")
    assert event_id in {r.event_id for r in agent.store.outbox_due(2**53, 0, 0, 100)}


def test_with_receipts_off_a_row_goes_on_the_brokers_puback(fleet: Any, probe: Probe) -> None:
    agent = Agent(load_config(fleet.config("loa-1", receipts=False)))
    agent.start()
    try:
        agent.emit(PlayMissed(key="k1", reason="test"))
        assert agent.outbox.wait_empty(60)
    finally:
        agent.close()


def _outbox_ids(state: Path) -> list[str]:
    """The event ids in an agent's outbox file, read beside the running agent (WAL)."""
    db = sqlite3.connect(state)
    try:
        return [e for (e,) in db.execute("SELECT event_id FROM outbox WHERE event_id IS NOT NULL")]
    finally:
        db.close()


@pytest.mark.slow
def test_records_waiting_for_receipts_survive_kill9_and_go_once_receipted(
    fleet: Any, probe: Probe, tmp_path: Path
) -> None:
    written = tmp_path / "written.log"
    writer = fleet.event_writer("loa-1", written, 0.0, 20, receipt_timeout_s=1.0)
    writer.start()
    eventually(lambda: written.exists() and "done" in written.read_text(), what="20 written")
    ids = [line for line in written.read_text().splitlines() if line != "done"]
    probe.wait_until(lambda _: set(ids) <= set(_events(probe)), 60)
    writer.kill9()  # every one PUBACKed, none receipted
    state = tmp_path / "state" / "loa-1" / "agent.sqlite3"
    assert set(ids) <= set(_outbox_ids(state))

    fleet.spawn("loa-1", receipt_timeout_s=1.0)  # the same identity and state file, again
    seen = len(probe.messages)
    probe.wait_until(lambda ms: set(ids) <= set(_events_in(ms[seen:])), 60)  # sent again
    receipt = Receipt(ids=list(dict.fromkeys(_events(probe))), ts=NOW)
    probe.publish("xaso/dev/loa-1/receipt", msgspec.json.encode(receipt))
    eventually(lambda: not set(ids) & set(_outbox_ids(state)), what="the receipted rows gone")


def _events_in(messages: list[Any]) -> list[str]:
    return [json.loads(m.payload)["id"] for m in messages if m.topic == "xaso/dev/loa-1/event"]


# the controller


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def replicas(site: Any, broker: Any, sessions: sessionmaker[Session]) -> Iterator[list[Ingest]]:
    user, password = site.controller_credentials()
    started = []
    for n in range(2):
        bus = Bus(broker.host, broker.port, user, password, client_id=f"ingest-{n}")
        ingest = Ingest(bus, sessions, share_group="receipts")
        ingest.start()
        bus.start()
        started.append(ingest)
    yield started
    for ingest in started:
        ingest.bus.close()
        ingest.close()


def event_json(event_id: str) -> bytes:
    body = {"key": event_id, "reason": "late"}
    return json.dumps({"id": event_id, "type": "play.missed", "ts": NOW, "body": body}).encode()


def test_two_replicas_receipt_what_they_stored_and_a_duplicate_again(
    replicas: list[Ingest], fleet: Any, sessions: sessionmaker[Session]
) -> None:
    witness = fleet.probe(subscribe="xaso/dev/+/receipt")
    devices = {"loa-1": fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/receipt")}
    devices["loa-2"] = fleet.probe(as_device="loa-2", subscribe="xaso/dev/loa-2/receipt")
    sent = {d: [f"{d}-e{n}" for n in range(150)] for d in devices}
    for n in range(150):
        for device, client in devices.items():
            client.publish(f"xaso/dev/{device}/event", event_json(sent[device][n]))
    client = devices["loa-1"]
    client.publish("xaso/dev/loa-1/event", b"not json")  # refused: stored never, receipted never

    def receipted(device: str) -> list[str]:
        topic = f"xaso/dev/{device}/receipt"
        return [i for m in list(witness.messages) if m.topic == topic for i in m.json()["ids"]]

    for device, reader in devices.items():
        eventually(lambda d=device: set(receipted(d)) == set(sent[d]), what=f"{device} receipted")
        # each device reads its own receipts (its own connection: it may lag the witness)
        eventually(
            lambda r=reader, d=device: (
                {i for m in list(r.messages) for i in m.json()["ids"]} == set(sent[d])
            ),
            what=f"{device} read its receipts",
        )
    assert all(r.stats.receipts > 0 for r in replicas)  # both replicas took a share
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(EventRecord)) == 300

    # a redelivered event already stored (its receipt was lost) is receipted again
    before = receipted("loa-1").count("loa-1-e7")
    client.publish("xaso/dev/loa-1/event", event_json("loa-1-e7"))
    eventually(lambda: receipted("loa-1").count("loa-1-e7") == before + 1, what="the duplicate")
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(EventRecord)) == 300
    assert sum(r.stats.duplicate_events for r in replicas) == 1


def test_ingest_without_receipts_sends_none(
    site: Any, broker: Any, sessions: sessionmaker[Session], fleet: Any
) -> None:
    witness = fleet.probe(subscribe="xaso/dev/+/receipt")
    user, password = site.controller_credentials()
    bus = Bus(broker.host, broker.port, user, password, client_id="ingest-quiet")
    ingest = Ingest(bus, sessions, receipts=False)
    ingest.start()
    bus.start()
    try:
        fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd").publish(
            "xaso/dev/loa-1/event", event_json("e1")
        )
        eventually(lambda: ingest.stats.stored["event"] == 1, what="the event stored")
        assert ingest.stats.receipts == 0 and witness.messages == []
    finally:
        bus.close()
        ingest.close()


# telemetry


def _sample(device: str, ts: int, received_ms: int) -> Item:
    return Item(device, "telemetry", Telemetry(ts=ts, uptime_s=1, cpu_temp_c=40.0), received_ms)


def test_a_telemetry_sample_delivered_twice_is_stored_once(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:  # twice in one batch, and once more in the next
        write_batch(s, [_sample("loa-1", NOW, NOW), _sample("loa-1", NOW, NOW + 5)], NOW)
    with sessions.begin() as s:
        write_batch(s, [_sample("loa-1", NOW, NOW + 9), _sample("loa-2", NOW, NOW + 9)], NOW)
    with sessions() as s:
        rows = s.execute(select(TelemetrySample.device_id, TelemetrySample.received_ms)).all()
    assert sorted(rows) == [("loa-1", NOW), ("loa-2", NOW + 9)]  # the first copy kept


def test_the_migration_keeps_one_copy_of_each_sample_stored_before(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "fleet_0005_upward")
    engine = make_engine(database_url)
    insert = text(
        "INSERT INTO telemetry_samples (device_id, ts_ms, received_ms) VALUES (:d, :ts, :r)"
    )
    with engine.begin() as conn:
        conn.execute(
            insert,
            [
                {"d": "loa-1", "ts": 1, "r": 10},
                {"d": "loa-1", "ts": 1, "r": 11},  # a redelivery stored before
                {"d": "loa-1", "ts": 2, "r": 12},
                {"d": "loa-2", "ts": 1, "r": 13},
            ],
        )
    engine.dispose()
    assert "fleet_0006_receipts" in upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT device_id, ts_ms, received_ms FROM telemetry_samples"))
        rows = sorted(tuple(r) for r in kept)
        assert rows == [("loa-1", 1, 10), ("loa-1", 2, 12), ("loa-2", 1, 13)]
    engine.dispose()
    command.downgrade(alembic_config(database_url), "fleet_0005_upward")


def test_acks_of_receipts_are_not_kept_for_a_later_publish(site: Any, broker: Any) -> None:
    """A receipt's PUBACK must not be taken for a later message's: the message-id
    space wraps, and an ack kept as "early" would end a later publish's wait."""
    user, password = site.controller_credentials()
    bus = Bus(broker.host, broker.port, user, password, client_id="receipts-acks")
    bus.start()
    try:
        for n in range(500):
            assert bus.publish_nowait("xaso/dev/loa-1/receipt", b'{"ids":["e%d"],"ts":1}' % n)
        bus.publish("xaso/dev/loa-1/receipt", b'{"ids":["last"],"ts":1}')  # waits for its own
        acks = bus._pubacks
        eventually(lambda: not acks._early and not acks._unwatched, what="no ack left over")
    finally:
        bus.close()


def test_rows_left_waiting_go_once_receipts_are_switched_off(fleet: Any, probe: Probe) -> None:
    """A run with receipts left rows waiting; the next run, without, sends them once more
    and deletes them on PUBACK, rather than keeping them for ever."""
    first = Agent(load_config(fleet.config("loa-1")))
    first.start()
    try:
        event_id = first.emit(PlayMissed(key="k1", reason="test")).id
        assert first.outbox.wait_sent(60)
    finally:
        first.close()
    seen = len(probe.messages)
    second = Agent(load_config(fleet.config("loa-1", receipts=False)))
    second.start()
    try:
        assert second.outbox.wait_empty(60)
        probe.wait_until(lambda ms: event_id in _events_in(ms[seen:]), 60)
    finally:
        second.close()
