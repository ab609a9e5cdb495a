"""A province emergency on two communes' real speaker agents (real Mosquitto, both
databases): it reaches both, a commune user's stop is refused and, sent anyway, is capped
below it on the speaker, and a province user's stop cuts it."""

from __future__ import annotations

from typing import Any

import pytest

from controller.radio.clip_library import OutOfScope
from controller.radio.targets import Target
from controller.site.communes import add_commune
from controller.site.devices import add_device
from tests import test_scheduling as harness
from tests.test_scheduling import Station
from tests.test_station_relays_e2e import play_event

sessions, station = harness.sessions, harness.station  # the fixtures, shared

TONE_S = 6.0
COMMUNES = {"loa-1": ("phu-an", "phu-an-thon-1"), "loa-2": ("tan-binh", "tan-binh-thon-1")}


@pytest.fixture
def two_communes(station: Station, broker: Any) -> Station:
    """loa-1 in Xã Phú An, loa-2 in Xã Tân Bình, both also in "all" (the province)."""
    add_commune(station.site.dir, "phu-an", "Xã Phú An")
    add_commune(station.site.dir, "tan-binh", "Xã Tân Bình")
    for device, (commune, village) in COMMUNES.items():
        add_device(station.site.dir, device, ["speaker"], [village, "all"],
                   broker_host=broker.host, broker_port=broker.port, force=True,
                   commune=commune)  # fmt: skip
    broker.reload()  # their new passwords and the communes' groups in the ACL
    return station


def test_a_province_emergency_reaches_both_communes_and_only_the_province_stops_it(
    two_communes: Station, probe: Any
) -> None:
    station = two_communes
    alarm = station.tone(1000, TONE_S)
    station.spawn(*COMMUNES)
    for device in COMMUNES:
        probe.status_is(device, "online")
    # a commune user may not send to the province's group, which reaches the other commune
    with pytest.raises(OutOfScope, match="reaches speakers outside Xã Phú An"):
        station.broadcasting.emergency([Target("group", "all")], alarm.sha256, by="xa",
                                       commune="phu-an")  # fmt: skip
    sent = station.broadcasting.emergency(
        [Target("group", "phu-an"), Target("group", "tan-binh")], alarm.sha256, by="tinh",
        label="Bão số 5",
    )  # fmt: skip
    assert sent.commune is None and sent.priority == 9
    assert [a.device for a in sent.acks] == ["loa-1", "loa-2"]
    for device in COMMUNES:
        play_event(probe, device, "play.started", sent.id)

    # Phú An's stop: refused while the province's emergency is on air there
    with pytest.raises(OutOfScope, match="only a province user can stop it"):
        station.broadcasting.stop([Target("group", "phu-an")], by="xa", commune="phu-an")
    # and were it sent (the on-air estimate wrong), the speaker would keep playing it
    refuse = station.broadcasting._refuse_stopping_the_province
    station.broadcasting._refuse_stopping_the_province = lambda *a: None  # type: ignore[method-assign]
    try:
        capped = station.broadcasting.stop([Target("group", "phu-an")], by="xa",
                                           commune="phu-an")  # fmt: skip
    finally:
        station.broadcasting._refuse_stopping_the_province = refuse  # type: ignore[method-assign]
    assert capped.commune == "phu-an" and capped.priority == 8
    assert probe.ack_for("loa-1", capped.id)["ok"]
    # the province's stop on Tân Bình cuts it there
    stopped = station.broadcasting.stop([Target("group", "tan-binh")], by="tinh")
    assert stopped.priority == 9 and probe.ack_for("loa-2", stopped.id)["ok"]

    whole = play_event(probe, "loa-1", "play.finished", sent.id)
    cut = play_event(probe, "loa-2", "play.finished", sent.id)
    (one,) = station.wait_recordings("loa-1", 1)
    (two,) = station.wait_recordings("loa-2", 1)
    assert one["key"] == two["key"] == sent.id
    assert one["samples"] / one["rate"] > TONE_S - 0.5, (whole, one)  # played through
    assert two["samples"] / two["rate"] < TONE_S - 1.0, (cut, two)  # cut by the province
    # the lists: each commune's own and the province's that reached it, with its own
    # speakers only; the province's everything
    an, binh = (station.broadcasting.recent(commune=c) for c in ("phu-an", "tan-binh"))
    assert [b.id for b in an] == [capped.id, sent.id]
    assert [b.id for b in binh] == [stopped.id, sent.id]
    for seen, device, commune in ((an[1], "loa-1", "phu-an"), (binh[1], "loa-2", "tan-binh")):
        assert [a.device for a in seen.acks] == [device] and seen.communes == (commune,)
        assert seen.targets == [Target("group", commune)]
    assert station.broadcasting.get(sent.id).communes == ("phu-an", "tan-binh")
    assert {b.id for b in station.broadcasting.recent()} == {sent.id, capped.id, stopped.id}
