"""The pure rule of self-healing documents: who is behind, and who is due a resend when."""

from __future__ import annotations

from controller.fleet.behind_rules import (
    Behind,
    DeviceDocuments,
    Memory,
    ResendPolicy,
    behind,
    expected_topics,
    held_documents,
    resend_plan,
)
from protocol.topics import Topics

NOW = 1_800_000_000_000
S = 1000
POLICY = ResendPolicy(after_ms=120 * S, backoff_max_ms=3600 * S, offline_after_ms=600 * S)
OWN = "xaso/dev/loa-1/schedule"
CONFIG = "xaso/dev/loa-1/config"
GROUP = "xaso/grp/thon-1/schedule"


def device(held: dict[str, int], device_id: str = "loa-1", **kw: object) -> DeviceDocuments:
    expected = expected_topics(Topics(), device_id, ["thon-1"])
    fields = {"state": "online", "last_seen_ms": NOW - 5 * S, **kw}
    return DeviceDocuments(device_id, expected, held, **fields)  # type: ignore[arg-type]


def test_the_expected_documents_are_its_own_and_its_groups_schedules() -> None:
    assert expected_topics(Topics("tinh/xa"), "loa-1", ["thon-2", "all"]) == (
        "tinh/xa/dev/loa-1/config",
        "tinh/xa/dev/loa-1/schedule",
        "tinh/xa/grp/all/schedule",
        "tinh/xa/grp/thon-2/schedule",
    )


def test_what_is_held_comes_from_the_newer_report() -> None:
    status, sample = {OWN: 3}, {OWN: 5}
    assert held_documents(status, 100, sample, 200) == {OWN: 5}
    assert held_documents(status, 300, sample, 200) == {OWN: 3}  # reconnected since
    assert held_documents(status, 100, None, 200) == {OWN: 3}  # an older agent's sample
    assert held_documents(None, None, None, None) == {}
    assert held_documents({OWN: True, CONFIG: "7", GROUP: 2}, 1, None, None) == {GROUP: 2}


def test_behind_names_each_older_document_with_what_is_held_and_current() -> None:
    published = {OWN: 5, CONFIG: 9, GROUP: 4}
    found = behind(device({}).expected, {OWN: 3, CONFIG: 9, GROUP: 6}, published)
    assert found == [Behind(OWN, "schedule", None, 3, 5)]  # config current, group newer
    found = behind(device({}).expected, {}, published)
    assert found == [
        Behind(CONFIG, "config", None, 0, 9),
        Behind(OWN, "schedule", None, 0, 5),
        Behind(GROUP, "schedule", "thon-1", 0, 4),
    ]
    unsent = behind(device({}).expected, {}, {"xaso/grp/thon-9/schedule": 1})
    assert unsent == []  # a group it is not in, and documents never signed


def test_a_device_is_due_after_staying_behind_for_the_grace_then_less_and_less_often() -> None:
    published = {OWN: 5}
    lagging = [device({OWN: 3})]
    first = resend_plan(lagging, published, {}, POLICY, NOW)
    assert first.first_seen == ["loa-1"] and first.due == {} and first.forget == []
    seen = {"loa-1": Memory(since_ms=NOW)}
    assert resend_plan(lagging, published, seen, POLICY, NOW + 119 * S).due == {}
    due = resend_plan(lagging, published, seen, POLICY, NOW + 120 * S)
    assert due.due == {"loa-1": [Behind(OWN, "schedule", None, 3, 5)]} and due.topics == [OWN]
    # after the first resend the wait is the grace, then twice it, then four times ...
    for resends, wait_s in ((1, 120), (2, 240), (3, 480), (6, 3600), (40, 3600)):
        known = {"loa-1": Memory(NOW, resent_ms=NOW, resends=resends)}
        then = NOW + wait_s * S
        still = [device({OWN: 3}, last_seen_ms=then - 5 * S)]  # it keeps reporting
        early = resend_plan(still, published, known, POLICY, then - 1)
        assert early.due == {} and early.first_seen == [], resends
        assert resend_plan(still, published, known, POLICY, then).due, resends


def test_offline_devices_wait_and_caught_up_or_removed_ones_are_forgotten() -> None:
    published = {OWN: 5, "xaso/dev/loa-2/schedule": 5}
    memory = {d: Memory(NOW - 3600 * S) for d in ("loa-1", "loa-2", "loa-3", "loa-9")}
    devices = [
        device({OWN: 3}, state="offline"),  # said offline
        device({"xaso/dev/loa-2/schedule": 0}, "loa-2", last_seen_ms=NOW - 601 * S),  # silent
        device({"xaso/dev/loa-3/schedule": 8}, "loa-3"),  # holds no own schedule: none sent
    ]
    plan = resend_plan(devices, published, memory, POLICY, NOW)
    assert plan.due == {} and plan.first_seen == []
    assert plan.forget == ["loa-3", "loa-9"]  # loa-9: no longer registered


def test_one_topic_is_resent_once_for_every_device_behind_on_it() -> None:
    published = {GROUP: 4, "xaso/dev/loa-3/config": 2}
    devices = [device({GROUP: 1}), device({GROUP: 2}, "loa-3")]
    memory = {d: Memory(NOW - 3600 * S) for d in ("loa-1", "loa-3")}
    plan = resend_plan(devices, published, memory, POLICY, NOW)
    assert sorted(plan.due) == ["loa-1", "loa-3"]
    assert plan.topics == ["xaso/dev/loa-3/config", GROUP]
