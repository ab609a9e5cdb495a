"""Webhooks that did not get through, on the alerts page: a real receiver that refuses,
the sender giving up, a technician reading why and sending it again (SQLite and PostgreSQL)."""

from __future__ import annotations

import socket

import pytest

from controller.fleet.alert_rules import MINUTE_MS, Thresholds
from controller.fleet.alerts import AlertEngine
from controller.fleet.webhooks import WebhookSender, error_words, undelivered
from tests.broadcast_api_helpers import Ctl, refused
from tests.test_alerts import add_offline_device
from tests.webhook_helpers import Clock, Receiver

T0 = 10 * MINUTE_MS
DEVICE = "loa-77"


def raise_offline(ctl: Ctl) -> None:
    sessions = ctl.app.state.xaso.sessions
    add_offline_device(sessions, DEVICE)
    AlertEngine(sessions, Thresholds(offline_after_min=1), webhooks=True).run(T0)


def sender(ctl: Ctl, url: str, clock: Clock) -> WebhookSender:
    return WebhookSender(ctl.app.state.xaso.sessions, url, clock, max_attempts=1, rand=lambda: 1.0)


def test_a_given_up_webhook_is_listed_with_why_and_sent_again_by_a_technician(offline: Ctl):
    raise_offline(offline)
    clock = Clock(T0)
    with Receiver(fail_first=1) as hook:
        send = sender(offline, hook.url, clock)
        assert send.send_due() == 0  # refused with 503: one attempt allowed, given up
        (listed,) = offline.call("technician", "GET", "/api/webhooks/undelivered").json()
        assert (listed["status"], listed["attempts"], listed["alert_kind"]) == (
            "failed",
            1,
            "device.offline",
        )
        assert listed["device_id"] == DEVICE and listed["next_attempt_ms"] is None
        assert listed["reason_vi"].startswith("Máy nhận từ chối (mã 503)")
        page = offline.call("technician", "GET", "/alerts/webhooks")
        assert page.status_code == 200
        assert "Máy nhận từ chối (mã 503)" in page.text and "Gửi lại" in page.text
        assert "HTTP 503" not in page.text  # the raw error stays in the log
        assert "1 webhook chưa gửi được" in offline.call("technician", "GET", "/alerts").text
        assert "webhook" not in offline.call("officer", "GET", "/alerts").text.lower()

        again = offline.call("technician", "POST", f"/api/webhooks/{listed['id']}/retry")
        assert again.status_code == 200, again.text
        clock.ms = offline.app.state.xaso.now_ms()  # due from the moment it was asked for
        assert send.send_due() == 1  # the receiver takes it now
    assert [p.what for p in hook.posts] == [("raised", "device.offline", DEVICE)] * 2
    assert offline.call("technician", "GET", "/api/webhooks/undelivered").json() == []
    assert (
        "Mọi webhook đã gửi tới máy nhận."
        in offline.call("technician", "GET", "/alerts/webhooks").text
    )
    (entry,) = [a for a in offline.audit() if a.action == "webhook.retry"]
    assert entry.target == f"webhook:{listed['id']}" and entry.actor_name.startswith("technician")
    assert "Gửi lại webhook" in offline.call("admin", "GET", "/audit").text
    # a delivered one is not sent again
    body = refused(offline.call("technician", "POST", f"/api/webhooks/{listed['id']}/retry"), 409)
    assert "không cần gửi lại" in body["vi"]


def test_only_those_who_manage_devices_see_or_resend_webhooks(offline: Ctl):
    raise_offline(offline)
    for role in ("officer", "broadcaster"):
        assert offline.call(role, "GET", "/api/webhooks/undelivered").status_code == 403
        assert offline.call(role, "POST", "/api/webhooks/1/retry").status_code == 403
        assert offline.call(role, "GET", "/alerts/webhooks").status_code == 403
    assert offline.call("admin", "GET", "/api/webhooks/undelivered").status_code == 200


@pytest.mark.parametrize("bad", ["0", "-1", "abc", str(2**60), "1.5"])
def test_a_retry_of_no_such_webhook_is_refused_clearly(offline: Ctl, bad: str):
    answer = offline.call("technician", "POST", f"/api/webhooks/{bad}/retry")
    assert answer.status_code == 422 and answer.json()["vi"]
    assert refused(offline.call("technician", "POST", "/api/webhooks/999/retry"), 404,
                   "webhooks.not_found")["vi"]  # fmt: skip


def test_an_unreachable_receiver_is_told_as_such_and_a_retrying_one_shows_its_next_attempt(
    offline: Ctl,
):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    raise_offline(offline)
    clock = Clock(T0)
    WebhookSender(
        offline.app.state.xaso.sessions, f"http://127.0.0.1:{closed}/hook", clock, max_attempts=3
    ).send_due()
    (row,) = undelivered(offline.app.state.xaso.sessions())
    assert row.status == "pending" and row.due_ms > T0
    (listed,) = offline.call("technician", "GET", "/api/webhooks/undelivered").json()
    assert listed["reason_vi"].startswith("Không kết nối được tới máy nhận")
    assert listed["next_attempt_ms"] == row.due_ms
    assert "Đang thử lại, lần tới lúc" in offline.call("technician", "GET", "/alerts/webhooks").text


def test_the_reasons_are_in_words():
    assert error_words("HTTP 404")[0].startswith("Máy nhận từ chối (mã 404)")
    assert error_words("ReadTimeout: timed out")[0].startswith("Máy nhận không trả lời kịp")
    assert error_words("ConnectTimeout: x")[0].startswith("Máy nhận không trả lời kịp")
    assert error_words("ConnectError: [Errno 111] refused")[0].startswith("Không kết nối được")
    assert error_words("")[1].startswith("Could not reach")
