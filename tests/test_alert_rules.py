"""The pure alert rules (controller/fleet/alert_rules.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.fleet.alert_rules import (
    CLOCK_UNSYNCED,
    COVER_OPEN,
    DEAD_AIR,
    DISK_LOW,
    KINDS,
    MINUTE_MS,
    OFFLINE,
    PAPER_LOW,
    PAPER_OUT,
    PLAY_FAILED,
    PLAY_MISSED,
    PRINTER_OFFLINE,
    TEMP_HIGH,
    UNPRINTABLE,
    DeviceSnapshot,
    PlayEvent,
    Thresholds,
    active_alerts,
)
from protocol.events import read_body

T = Thresholds(offline_after_min=5, temp_high_c=75, disk_low_pct=10, disk_low_mb=500)
NOW = 1_763_800_000_000
HEALTH_KINDS = {
    TEMP_HIGH,
    DISK_LOW,
    CLOCK_UNSYNCED,
    PAPER_OUT,
    COVER_OPEN,
    PRINTER_OFFLINE,
    PAPER_LOW,
    UNPRINTABLE,
}


def kinds(devices=(), events=(), now=NOW, t=T) -> set[tuple[str, str]]:
    return set(active_alerts(devices, events, t, now))


def test_offline_fires_after_n_minutes_not_before():
    d = DeviceSnapshot("loa-1", state="offline", changed_ms=NOW, last_seen_ms=NOW)
    assert kinds([d], now=NOW + 5 * MINUTE_MS - 1) == set()
    assert kinds([d], now=NOW + 5 * MINUTE_MS) == {(OFFLINE, "loa-1")}
    online = DeviceSnapshot("loa-1", state="online", changed_ms=NOW, last_seen_ms=NOW + 60_000)
    assert kinds([online], now=NOW + 5 * MINUTE_MS) == set()


def test_a_silent_device_is_offline_even_without_its_will():
    d = DeviceSnapshot("loa-1", state="online", changed_ms=NOW, last_seen_ms=NOW)
    assert kinds([d], now=NOW + 6 * MINUTE_MS) == {(OFFLINE, "loa-1")}
    never_seen = DeviceSnapshot("loa-9")
    assert kinds([never_seen], now=NOW) == set()


def test_health_thresholds():
    seen = {"state": "online", "changed_ms": NOW, "last_seen_ms": NOW}
    hot = DeviceSnapshot("a", cpu_temp_c=75.0, **seen)
    cool = DeviceSnapshot("b", cpu_temp_c=74.9, **seen)
    disk_mb = DeviceSnapshot("c", disk_free_mb=499, **seen)
    disk_pct = DeviceSnapshot("d", disk_free_mb=9000, disk_free_pct=9.5, **seen)
    unsynced = DeviceSnapshot("e", clock_synced=False, **seen)
    unknown_clock = DeviceSnapshot("f", clock_synced=None, **seen)
    printer = DeviceSnapshot("k", printer={"paper": "out", "cover": "open"}, **seen)
    near_end = DeviceSnapshot("m", printer={"paper": "near_end", "cover": "closed"}, **seen)
    got = kinds([hot, cool, disk_mb, disk_pct, unsynced, unknown_clock, printer, near_end])
    assert got == {
        (TEMP_HIGH, "a"),
        (DISK_LOW, "c"),
        (DISK_LOW, "d"),
        (CLOCK_UNSYNCED, "e"),
        (COVER_OPEN, "k"),  # the paper sensor reads "out" with the cover open: the cover says
        (PAPER_LOW, "m"),
    }


def test_messages_are_vietnamese_first_and_english():
    d = DeviceSnapshot("kiosk-1", "online", NOW, NOW, printer={"paper": "out"})
    alert = active_alerts([d], [], T, NOW)[(PAPER_OUT, "kiosk-1")]
    assert (
        alert.message_vi == "Máy in kiosk-1 hết giấy: thay cuộn giấy mới, các số đã giữ sẽ được in"
    )
    assert (
        alert.message_en == "kiosk-1 printer out of paper: load a new roll, kept numbers will print"
    )


def printer_kinds(body: dict) -> set[str]:
    d = DeviceSnapshot("kiosk-1", "online", NOW, NOW, printer=body)
    return {kind for kind, _ in active_alerts([d], [], T, NOW)}


def test_each_printer_state_has_its_alert() -> None:
    """From the kiosk's printer.status bodies: offline, cover, paper out and low apart."""
    base = {"pending": ["A001"]}
    assert (
        printer_kinds({**base, "online": True, "paper": "ok", "cover": "closed", "state": "ready"})
        == set()
    )
    unplugged = {
        "online": False,
        "paper": "unknown",
        "cover": "unknown",
        "state": "offline",
        "fault": "unplugged",
    }
    assert printer_kinds({**base, **unplugged}) == {PRINTER_OFFLINE}
    assert printer_kinds({**base, **unplugged, "fault": "garbled"}) == {PRINTER_OFFLINE}
    cover = {"online": False, "paper": "out", "cover": "open", "state": "cover_open"}
    assert printer_kinds({**base, **cover}) == {COVER_OPEN}
    out = {"online": False, "paper": "out", "cover": "closed", "state": "paper_out"}
    assert printer_kinds({**base, **out}) == {PAPER_OUT}
    low = {"online": True, "paper": "near_end", "cover": "closed", "state": "near_end"}
    assert printer_kinds({**base, **low}) == {PAPER_LOW}
    error = {"online": False, "paper": "ok", "cover": "closed", "state": "error"}
    assert printer_kinds({**base, **error}) == {PRINTER_OFFLINE}
    assert printer_kinds({**low, "unprintable": ["B002"]}) == {PAPER_LOW, UNPRINTABLE}


def test_an_older_agents_silent_printer_is_offline_not_paper_ok() -> None:
    """Agents before `state` sent paper "ok" for a printer that did not answer."""
    old = {"online": False, "paper": "ok", "cover": "closed", "pending": []}
    assert printer_kinds(old) == {PRINTER_OFFLINE}
    d = DeviceSnapshot("kiosk-1", "online", NOW, NOW, printer=old)
    alert = active_alerts([d], [], T, NOW)[(PRINTER_OFFLINE, "kiosk-1")]
    assert alert.message_vi.startswith("Máy in kiosk-1 không trả lời: kiểm tra dây cáp")


def test_printer_messages_say_what_to_do() -> None:
    bodies = {
        PAPER_OUT: {"online": False, "paper": "out", "cover": "closed"},
        COVER_OPEN: {"online": False, "paper": "ok", "cover": "open"},
        PRINTER_OFFLINE: {"online": False, "paper": "unknown", "cover": "unknown"},
        PAPER_LOW: {"online": True, "paper": "near_end", "cover": "closed"},
    }
    for kind, body in bodies.items():
        d = DeviceSnapshot("kiosk-1", "online", NOW, NOW, printer=body)
        alert = active_alerts([d], [], T, NOW)[(kind, "kiosk-1")]
        assert ": " in alert.message_vi and ": " in alert.message_en  # what, then what to do


def test_missed_and_failed_plays_within_the_window():
    def ev(n, type_, at, **fields):
        body = {"key": f"k{n}", **fields}
        if type_ == "play.finished":
            body |= {"origin": "schedule", "priority": 2, "planned_ms": at, "actual_ms": at}
            body |= {"played_ms": 0}
        return PlayEvent("loa-2", f"e{n}", type_, at, read_body(type_, body))

    events = [
        ev(1, "play.missed", NOW - 10 * MINUTE_MS, reason="late", label="Bản tin"),
        ev(2, "play.missed", NOW - 5 * MINUTE_MS, reason="clip_unavailable"),
        ev(3, "play.missed", NOW - 1 * MINUTE_MS, reason="quiet_hours"),  # by design: no alert
        ev(4, "play.finished", NOW - 2 * MINUTE_MS, outcome="failed"),
        ev(5, "play.finished", NOW - 2 * MINUTE_MS, outcome="completed"),
        ev(6, "play.finished", NOW - 61 * MINUTE_MS, outcome="failed"),  # too old
    ]
    alerts = active_alerts([], events, T, NOW)
    assert set(alerts) == {(PLAY_MISSED, "loa-2"), (PLAY_FAILED, "loa-2")}
    missed = alerts[(PLAY_MISSED, "loa-2")]
    assert missed.details["count"] == 2
    assert [r["event_id"] for r in missed.details["recent"]] == ["e1", "e2"]
    assert "2 lượt phát bị bỏ lỡ" in missed.message_vi
    # an hour later the window has passed: cleared
    assert active_alerts([], events, T, NOW + 60 * MINUTE_MS) == {}


def test_a_play_cut_off_with_the_agent_is_a_failed_play_and_a_cut_by_rule_is_not():
    play = {"origin": "schedule", "priority": 2, "planned_ms": NOW, "actual_ms": NOW}
    bodies = [
        ("play.interrupted", {"key": "a", **play, "played_ms": 2_000, "checkpoint_ms": NOW,
                              "reason": "power_loss"}),
        ("play.finished", {"key": "b", **play, "played_ms": 900, "outcome": "stopped"}),
        ("play.finished", {"key": "c", **play, "played_ms": 900, "outcome": "preempted",
                           "resumes": True}),
    ]  # fmt: skip
    events = [
        PlayEvent("loa-1", f"e{n}", t, NOW - MINUTE_MS, read_body(t, b))
        for n, (t, b) in enumerate(bodies)
    ]
    alert = active_alerts([], events, T, NOW)[(PLAY_FAILED, "loa-1")]
    assert alert.details["count"] == 1 and alert.details["recent"][0]["reason"] == "power_loss"


snapshots = st.builds(
    DeviceSnapshot,
    device_id=st.sampled_from(["loa-1", "loa-2", "kiosk-1"]),
    state=st.sampled_from([None, "online", "offline"]),
    changed_ms=st.none() | st.integers(NOW - 20 * MINUTE_MS, NOW),
    last_seen_ms=st.none() | st.integers(NOW - 20 * MINUTE_MS, NOW),
    cpu_temp_c=st.none() | st.floats(20, 100),
    disk_free_mb=st.none() | st.floats(0, 10_000),
    disk_free_pct=st.none() | st.floats(0, 100),
    clock_synced=st.none() | st.booleans(),
    printer=st.none()
    | st.fixed_dictionaries(
        {
            "online": st.booleans(),
            "paper": st.sampled_from(["ok", "near_end", "out", "unknown"]),
            "cover": st.sampled_from(["open", "closed", "unknown"]),
        }
    ),
)


@given(st.lists(snapshots, max_size=6, unique_by=lambda d: d.device_id))
def test_rules_are_consistent(devices):
    alerts = active_alerts(devices, [], T, NOW)
    limit = 5 * MINUTE_MS
    for d in devices:
        mine = {kind for kind, dev in alerts if dev == d.device_id}
        down = (
            d.state == "offline" and d.changed_ms is not None and NOW - d.changed_ms >= limit
        ) or (d.last_seen_ms is not None and NOW - d.last_seen_ms >= limit)
        assert (OFFLINE in mine) == down
        if down:  # stale readings of an offline device raise nothing more
            assert mine == {OFFLINE}
        else:
            hot = d.cpu_temp_c is not None and d.cpu_temp_c >= 75
            assert (TEMP_HIGH in mine) == hot
            assert (CLOCK_UNSYNCED in mine) == (d.clock_synced is False)
    for (kind, dev), alert in alerts.items():
        assert kind in KINDS and alert.device_id == dev
        assert alert.message_vi and alert.message_en and alert.message_vi != alert.message_en
    assert active_alerts(devices, [], T, NOW) == alerts  # deterministic


def test_dead_air_on_a_relay_is_its_own_alert_within_the_window():
    def fault(n, dev, reason, at):
        body = read_body("audio.fault", {"reason": reason, "key": f"vov-{n}", "detail": "..."})
        return PlayEvent(dev, f"f{n}", "audio.fault", at, body)

    events = [
        fault(1, "loa-1", "dead_air", NOW - 30 * MINUTE_MS),
        fault(2, "loa-1", "dead_air", NOW - 1 * MINUTE_MS),
        fault(3, "loa-2", "stream_dropped", NOW - 1 * MINUTE_MS),  # a drop is no dead air
        fault(4, "loa-3", "dead_air", NOW - 61 * MINUTE_MS),  # too old
    ]
    alerts = active_alerts([], events, T, NOW)
    assert set(alerts) == {(DEAD_AIR, "loa-1")}  # and no play.failed or play.missed
    alert = alerts[(DEAD_AIR, "loa-1")]
    assert alert.message_vi == (
        "loa-1: luồng tiếp sóng mất tiếng 2 lần trong 60 phút qua. Hãy kiểm tra nguồn phát của đài."
    )
    assert alert.message_en.startswith("loa-1: the relayed stream went silent 2 times")
    assert [r["key"] for r in alert.details["recent"]] == ["vov-1", "vov-2"]
