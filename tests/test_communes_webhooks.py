"""Alert webhooks keyed by commune (issue 14), on both databases with real HTTP receivers:
the province's webhook gets every alert, a commune's only its devices'; what did not get
through is listed, and sent again, only to the commune whose webhook it is owed to."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from controller.db.fleet_tables import Alert, DeviceState, WebhookDelivery
from controller.fleet.alert_rules import Thresholds
from controller.fleet.alerts import AlertEngine
from controller.fleet.webhooks import WebhookSender
from controller.settings import AlertsSection
from tests import test_communes_api as api
from tests.broadcast_api_helpers import refused
from tests.commune_helpers import OWN, Two
from tests.test_alerts import add_offline_device
from tests.webhook_helpers import Clock, Receiver

two = api.two  # the fixture, shared
PROVINCES = "loa-tinh"  # a speaker of no commune: the province's


def raise_offline(two: Two, communes: set[str]) -> int:
    """Every speaker offline (Phú An's, Tân Bình's and the province's), their alerts raised
    with the province's webhook and ``communes``' on; returns the engine's clock."""
    state = two.app.state.xaso
    with state.sessions.begin() as db:
        db.execute(sa.delete(Alert))  # the fixture's, raised with no webhook
        db.execute(sa.update(DeviceState).where(DeviceState.device_id.in_(OWN.values()))
                   .values(state="offline", changed_ms=0))  # fmt: skip
    add_offline_device(state.sessions, PROVINCES)
    now: int = state.now_ms()
    engine = AlertEngine(state.sessions, Thresholds(offline_after_min=1), webhooks=True,
                         commune_webhooks=communes)  # fmt: skip
    assert len(engine.run(now).raised) == 3
    return now


def test_a_communes_webhook_gets_its_devices_alerts_and_the_provinces_every_one(
    two: Two,
) -> None:
    now = raise_offline(two, {"phu-an", "tan-binh"})
    with Receiver() as province, Receiver() as an, Receiver() as binh:
        urls = {"phu-an": an.url, "tan-binh": binh.url}
        sender = WebhookSender(two.app.state.xaso.sessions, province.url, Clock(now),
                               commune_urls=urls)  # fmt: skip
        assert sender.send_due() == 5
    assert sorted(p.what[2] for p in province.posts) == sorted([*OWN.values(), PROVINCES])
    assert [p.what[2] for p in an.posts] == [OWN["phu-an"]]
    assert [p.what[2] for p in binh.posts] == [OWN["tan-binh"]]
    assert an.posts[0].body["alert"]["commune"] == "phu-an"
    by_device = {p.what[2]: p.body["alert"]["commune"] for p in province.posts}
    assert by_device == {OWN["phu-an"]: "phu-an", OWN["tan-binh"]: "tan-binh", PROVINCES: None}
    assert {p.key for p in province.posts}.isdisjoint(p.key for p in an.posts)  # its own


def test_a_commune_with_no_webhook_gets_nothing_queued(two: Two) -> None:
    raise_offline(two, {"phu-an"})
    with two.app.state.xaso.sessions() as db:
        owed = db.execute(sa.select(WebhookDelivery.commune)).scalars().all()
    assert sorted(owed, key=str) == sorted([None, None, None, "phu-an"], key=str)


def test_what_did_not_get_through_is_listed_and_sent_again_by_the_commune_it_is_owed_to(
    two: Two,
) -> None:
    now = raise_offline(two, {"phu-an", "tan-binh"})
    with Receiver(fail_first=99) as province, Receiver(fail_first=99) as an, Receiver() as binh:
        urls = {"phu-an": an.url, "tan-binh": binh.url}
        sender = WebhookSender(two.app.state.xaso.sessions, province.url, Clock(now),
                               commune_urls=urls, max_attempts=1)  # fmt: skip
        assert sender.send_due() == 1  # Tân Bình's; the province's three and Phú An's given up
    an_tech, binh_tech = ("phu-an", "technician"), ("tan-binh", "technician")
    mine = two.call(an_tech, "GET", "/api/webhooks/undelivered").json()
    assert [(u["commune"], u["device_id"], u["status"]) for u in mine] == [
        ("phu-an", OWN["phu-an"], "failed")
    ]  # not the province's, though one is about Phú An's speaker
    assert two.call(binh_tech, "GET", "/api/webhooks/undelivered").json() == []
    everything = two.call((None, "admin"), "GET", "/api/webhooks/undelivered").json()
    assert sorted((u["commune"] or "") for u in everything) == ["", "", "", "phu-an"]
    page = two.call(binh_tech, "GET", "/alerts/webhooks").text
    assert "Mọi webhook đã gửi tới máy nhận." in page
    assert "1 webhook chưa gửi được" in two.call(an_tech, "GET", "/alerts").text
    provinces = next(u["id"] for u in everything if u["commune"] is None)
    for who, delivery in ((binh_tech, mine[0]["id"]), (an_tech, provinces)):
        answer = refused(two.call(who, "POST", f"/api/webhooks/{delivery}/retry"), 404,
                         "webhooks.not_found")  # fmt: skip
        assert str(delivery) in answer["vi"]
    assert two.call(binh_tech, "POST", f"/alerts/webhooks/{mine[0]['id']}/retry").status_code == 404
    again = two.call(an_tech, "POST", f"/api/webhooks/{mine[0]['id']}/retry")
    assert again.status_code == 200  # owed again: retrying, as Phú An alone sees it
    assert [(u["id"], u["status"]) for u in again.json()] == [(mine[0]["id"], "pending")]
    with two.app.state.xaso.sessions() as db:
        states = dict(db.execute(sa.select(WebhookDelivery.id, WebhookDelivery.status)).all())
    assert states[mine[0]["id"]] == "pending" and states[provinces] == "failed"


@pytest.mark.parametrize(
    "hooks", [{"Phú An": "https://x.example/h"}, {"phu-an": "ftp://x.example/h"}]
)
def test_a_communes_webhook_needs_a_commune_id_and_an_http_url(hooks: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        AlertsSection(commune_webhooks=hooks)
