"""Alert webhooks through their queue (controller/fleet/webhooks.py): a real HTTP receiver
that fails, hangs or answers; real SQLite and PostgreSQL; two senders as two replicas."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import Alert, DeviceState, WebhookDelivery
from controller.fleet.alert_rules import MINUTE_MS, OFFLINE, Thresholds
from controller.fleet.alerts import AlertEngine
from controller.fleet.service import FleetService
from controller.fleet.webhooks import WebhookSender
from controller.settings import load_settings
from tests.test_alerts import add_offline_device
from tests.test_ingest import eventually
from tests.webhook_helpers import Clock, Receiver

T0 = 10 * MINUTE_MS  # loa-* went offline at 0: past the one-minute limit


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


def deliveries(sessions: sessionmaker[Session]) -> list[WebhookDelivery]:
    with sessions() as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def go_online(sessions: sessionmaker[Session], device: str) -> None:
    with sessions.begin() as s:
        state = s.get(DeviceState, device)
        assert state is not None
        state.state = "online"


def sender(sessions: sessionmaker[Session], url: str, clock: Clock, **kw: object) -> WebhookSender:
    return WebhookSender(sessions, url, clock, rand=lambda: 1.0, **kw)  # type: ignore[arg-type]


def test_each_change_queues_one_delivery_in_its_transaction_and_posts_it_with_its_key(sessions):
    add_offline_device(sessions, "loa-9")
    silent = AlertEngine(sessions, Thresholds(offline_after_min=1))
    assert len(silent.run(T0).raised) == 1 and deliveries(sessions) == []  # webhooks off

    add_offline_device(sessions, "loa-1")
    engine = AlertEngine(sessions, Thresholds(offline_after_min=1), webhooks=True)
    raised = engine.run(T0 + MINUTE_MS).raised
    [queued] = deliveries(sessions)
    assert (queued.alert_id, queued.action, queued.status) == (raised[0].id, "raised", "pending")
    assert queued.payload["alert"]["message_vi"].startswith("Thiết bị loa-1 mất kết nối")

    clock = Clock(T0 + MINUTE_MS)
    with Receiver() as hook:
        assert sender(sessions, hook.url, clock).send_due() == 1
        go_online(sessions, "loa-1")
        clock.ms = T0 + 2 * MINUTE_MS
        engine.run(clock.ms)
        assert sender(sessions, hook.url, clock).send_due() == 1
    rows = deliveries(sessions)
    assert [p.what for p in hook.posts] == [
        ("raised", OFFLINE, "loa-1"),
        ("cleared", OFFLINE, "loa-1"),
    ]
    assert [p.key for p in hook.posts] == [r.key for r in rows]  # the Idempotency-Key header
    assert len({r.key for r in rows}) == 2
    assert [r.status for r in rows] == ["sent", "sent"] and rows[1].payload["alert"]["cleared_ms"]


def test_a_failing_receiver_gets_retries_with_backoff_and_the_alert_once(sessions):
    add_offline_device(sessions, "loa-2")
    engine = AlertEngine(sessions, Thresholds(offline_after_min=1), webhooks=True)
    engine.run(T0)
    clock = Clock(T0)
    with Receiver(fail_first=2) as hook:
        send = sender(sessions, hook.url, clock, retry_s=10, retry_max_s=60)
        assert send.send_due() == 0  # 503
        [row] = deliveries(sessions)
        assert (row.attempts, row.due_ms, row.last_error) == (1, T0 + 10_000, "HTTP 503")
        go_online(sessions, "loa-2")
        engine.run(T0 + 1)  # cleared while the raise is still owed: the clear waits for it
        clock.ms = T0 + 9_999
        assert send.send_due() == 0 and len(hook.posts) == 1  # not due yet
        clock.ms = T0 + 10_000
        assert send.send_due() == 0  # the second 503; the next wait is twice as long
        assert deliveries(sessions)[0].due_ms == T0 + 10_000 + 20_000
        clock.ms = T0 + 30_000
        assert send.send_due() == 2  # the raise, then its clear
        assert send.send_due() == 0
    assert [p.what for p in hook.accepted()] == [
        ("raised", OFFLINE, "loa-2"),
        ("cleared", OFFLINE, "loa-2"),
    ]
    assert len({p.key for p in hook.posts[:3]}) == 1  # the same delivery, three times
    rows = deliveries(sessions)
    assert [(r.status, r.attempts, r.last_error) for r in rows] == [
        ("sent", 3, None),
        ("sent", 1, None),
    ]


def test_a_delivery_that_keeps_failing_is_given_up_and_logged(sessions, caplog):
    add_offline_device(sessions, "loa-3")
    engine = AlertEngine(sessions, Thresholds(offline_after_min=1), webhooks=True)
    engine.run(T0)
    go_online(sessions, "loa-3")
    engine.run(T0 + 1)
    clock = Clock(T0)
    with Receiver(fail_first=1000) as hook, caplog.at_level(logging.WARNING):
        send = sender(sessions, hook.url, clock, max_attempts=2, retry_s=1, retry_max_s=1)
        for _ in range(5):
            send.send_due()
            clock.ms += 1_000
    rows = deliveries(sessions)
    assert [(r.action, r.status, r.attempts) for r in rows] == [
        ("raised", "failed", 2),
        ("cleared", "failed", 2),  # a raise given up no longer holds its clear back
    ]
    assert [p.what[0] for p in hook.posts] == ["raised", "raised", "cleared", "cleared"]
    given_up = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(given_up) == 2 and "given up after 2 attempts: HTTP 503" in given_up[0].message


def test_a_receiver_that_hangs_times_out_and_is_retried(sessions):
    add_offline_device(sessions, "loa-1")
    AlertEngine(sessions, Thresholds(offline_after_min=1), webhooks=True).run(T0)
    clock = Clock(T0)
    with Receiver(hang=True) as hook:
        send = sender(sessions, hook.url, clock, timeout_s=0.3, retry_s=1, retry_max_s=1)
        assert send.send_due() == 0
        [row] = deliveries(sessions)
        assert row.status == "pending" and (row.last_error or "").startswith("ReadTimeout")
        hook.release()
        clock.ms += 1_000
        assert send.send_due() == 1
    assert deliveries(sessions)[0].status == "sent"


def test_a_sender_that_dies_holding_a_lease_is_taken_over_once_it_expires(sessions, caplog):
    add_offline_device(sessions, "loa-1")
    AlertEngine(sessions, Thresholds(offline_after_min=1), webhooks=True).run(T0)
    a = sender(sessions, "http://127.0.0.1:9/unused", Clock(T0))
    b = sender(sessions, "http://127.0.0.1:9/unused", Clock(T0))
    held = a.claim(T0)
    assert held is not None and held.attempts == 1
    assert b.claim(T0 + a.lease_ms - 1) is None  # leased to a
    taken = b.claim(T0 + a.lease_ms + 1)
    assert taken is not None and (taken.key, taken.attempts) == (held.key, 2)
    with caplog.at_level(logging.WARNING):
        a.finish(held, T0 + a.lease_ms + 2, None)  # a wakes up: its outcome is not kept
    assert "lease lost" in caplog.text
    assert deliveries(sessions)[0].status == "pending"
    b.finish(taken, T0 + a.lease_ms + 3, None)
    assert deliveries(sessions)[0].status == "sent"


def test_two_replicas_deliver_each_webhook_exactly_once(database_url, sessions):
    devices = [f"loa-{i}" for i in range(30)]
    for device in devices:
        add_offline_device(sessions, device)
    engine = AlertEngine(sessions, Thresholds(offline_after_min=1), webhooks=True)
    assert len(engine.run(wall_ms()).raised) == len(devices)
    for device in devices[::2]:
        go_online(sessions, device)
    engine.run(wall_ms())
    owed = {r.key for r in deliveries(sessions)}
    assert len(owed) == len(devices) * 3 // 2

    replicas = [make_engine(database_url) for _ in range(2)]  # a pool each, as two processes
    with Receiver() as hook:
        senders = [WebhookSender(session_factory(e), hook.url, wall_ms) for e in replicas]
        with senders[0].running(), senders[1].running():
            eventually(
                lambda: all(r.status == "sent" for r in deliveries(sessions)),
                timeout=120,
                what="every delivery sent",
            )
    for e in replicas:
        e.dispose()
    keys = [p.key for p in hook.posts]
    assert sorted(keys) == sorted(owed)  # each once: no repeat, none missing
    order = [(p.body["alert"]["device_id"], p.body["action"]) for p in hook.posts]
    for device in devices[::2]:
        assert order.index((device, "raised")) < order.index((device, "cleared"))


def test_a_hung_receiver_does_not_hold_up_alert_evaluation(tmp_path: Path, database_url, sessions):
    config = tmp_path / "controller.toml"
    with Receiver(hang=True) as hook:
        config.write_text(
            f'[database]\nurl = "{database_url}"\n[site]\ndir = "no-site"\n'
            f'[alerts]\noffline_after_min = 1\ncheck_every_s = 0.2\nwebhook_url = "{hook.url}"\n'
            "webhook_timeout_s = 60\n",
            encoding="utf-8",
        )
        service = FleetService(load_settings(config), sessions, time.time)
        add_offline_device(sessions, "loa-1")
        with service.running():
            eventually(lambda: hook.waiting == 1, what="the first POST held by the receiver")
            add_offline_device(sessions, "loa-2")
            eventually(lambda: open_alert(sessions, "loa-2"), what="loa-2 raised meanwhile")
            assert hook.waiting == 1 and hook.posts == []  # the first POST is still held
            hook.release()
            eventually(lambda: len(hook.accepted()) == 2, what="both alerts delivered")
    assert sorted(p.what for p in hook.posts) == [
        ("raised", OFFLINE, "loa-1"),
        ("raised", OFFLINE, "loa-2"),
    ]


def open_alert(sessions: sessionmaker[Session], device: str) -> bool:
    with sessions() as s:
        return s.scalar(select(Alert.id).where(Alert.device_id == device)) is not None
