"""The pure halves of duplicate identity: the controller's rule
(controller/fleet/identity_rules.py) and the agent's guard (plumbing/takeover.py)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.fleet.alert_rules import IDENTITY_DUPLICATE, KINDS, MINUTE_MS
from controller.fleet.identity_rules import KEEP, WINDOW_MIN, Sighting, duplicate_identity, remember
from plumbing.takeover import TakeoverGuard

NOW = 1_763_800_000_000


def seen(instance: str, minutes_ago: float, address: str = "") -> Sighting:
    addresses = (address or f"10.0.0.{ord(instance[0]) % 250}",)
    return Sighting(instance, addresses, NOW - int(minutes_ago * MINUTE_MS))


def test_a_run_coming_back_after_another_is_a_clone() -> None:
    turns = [seen("a", 10, "10.0.0.5"), seen("b", 9, "10.0.0.7"), seen("a", 8, "10.0.0.5")]
    alert = duplicate_identity("loa-1", turns, NOW)
    assert alert is not None and alert.kind == IDENTITY_DUPLICATE in KINDS
    assert alert.device_id == "loa-1" and alert.severity == "critical"
    for text in (alert.message_vi, alert.message_en):
        assert "loa-1" in text and "10.0.0.5" in text and "10.0.0.7" in text
    assert alert.message_vi.startswith("Hai máy")
    assert alert.details["addresses"] == [["10.0.0.5"], ["10.0.0.7"]]


def test_restarts_and_reconnects_are_not_clones() -> None:
    restarts = [seen("a", 50), seen("a", 40), seen("b", 30), seen("b", 20), seen("c", 1)]
    assert duplicate_identity("loa-1", restarts, NOW) is None
    assert duplicate_identity("loa-1", [], NOW) is None


def test_the_alert_clears_once_the_turns_are_older_than_the_window() -> None:
    turns = [seen("a", 30), seen("b", 29), seen("a", 28)]
    assert duplicate_identity("loa-1", turns, NOW) is not None
    later = NOW + int(WINDOW_MIN * MINUTE_MS)
    assert duplicate_identity("loa-1", turns, later) is None


def test_sightings_round_trip_and_only_the_newest_are_kept() -> None:
    kept: list[Sighting] = []
    for n in range(KEEP + 5):
        kept = remember(kept, seen(f"i{n}", 60 - n))
    assert len(kept) == KEEP and kept[-1].instance == f"i{KEEP + 4}"
    assert [Sighting.of(s.as_json()) for s in kept] == kept


@given(st.lists(st.sampled_from("ab"), min_size=1, max_size=12))
def test_two_runs_alert_exactly_when_one_returns(order: list[str]) -> None:
    turns = [seen(i, 60 - n) for n, i in enumerate(order)]
    returned = any(order[k] in order[:k] and order[k] != order[k - 1] for k in range(1, len(order)))
    assert (duplicate_identity("loa-1", turns, NOW) is not None) == returned


# --- the agent's guard ---


def test_two_quick_losses_in_a_row_hold_longer_each_time() -> None:
    guard = TakeoverGuard(stable_s=60, hold_s=3, hold_max_s=40)
    holds = []
    for n in range(6):
        guard.connected(100.0 * n)
        guard.evidence(100.0 * n + 1)  # the clone's status, found on connecting
        holds.append(guard.lost(100.0 * n + 5))  # thrown off 5 s after each connect
    assert holds == [None, 3, 12, 40, 40, 40]
    assert guard.suspected == 6


def test_quick_losses_without_a_clones_status_are_a_flaky_link() -> None:
    guard = TakeoverGuard(stable_s=60, hold_s=3, hold_max_s=40)
    for n in range(6):
        guard.connected(10.0 * n)
        assert guard.lost(10.0 * n + 5) is None
    assert guard.suspected == 0
    guard.evidence(0.0)  # long ago: old news by the next loss
    guard.connected(100.0)
    assert guard.lost(101.0) is None


def test_a_lost_link_after_a_stable_connection_is_the_usual_backoff() -> None:
    guard = TakeoverGuard(stable_s=60, hold_s=3, hold_max_s=40)
    for start in (0.0, 1000.0, 2000.0):
        guard.connected(start)
        assert guard.lost(start + 61) is None
        assert guard.suspected == 0
    assert guard.lost(3000.0) is None  # never connected since: not a takeover


def test_a_broker_that_was_away_explains_the_losses() -> None:
    guard = TakeoverGuard(stable_s=60, hold_s=3, hold_max_s=40)
    for n in range(4):  # a broker restarted every 10 s: each time the next attempt is refused
        guard.connected(10.0 * n)
        guard.evidence(10.0 * n)
        assert guard.lost(10.0 * n + 1) is None
        guard.unreachable()
    assert guard.suspected == 0


def test_guard_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="hold_s"):
        TakeoverGuard(stable_s=60, hold_s=10, hold_max_s=5)


# --- bad input at the entry points ---


def test_a_status_with_too_much_identity_is_refused_whole() -> None:
    from msgspec import ValidationError

    from protocol.uplink import Status

    base = {"state": "online", "ts": NOW}
    assert msgspec.convert(
        {**base, "instance": "a1", "addresses": ["10.0.0.5"]}, Status, strict=False
    )
    for bad in (
        {"addresses": [f"10.0.0.{n}" for n in range(9)]},
        {"addresses": ["x" * 65]},
        {"instance": "i" * 65},
        {"thrown_off": -1},
    ):
        with pytest.raises(ValidationError):
            msgspec.convert({**base, **bad}, Status, strict=False)


def test_takeover_settings_are_checked_with_a_clear_message(tmp_path) -> None:
    from edge.config import ConfigError, load_config

    path = tmp_path / "agent.toml"
    path.write_text(
        '[device]\nid = "loa-1"\n[trust]\nkeys = { "k" = "x" }\n'
        "[mqtt]\ntakeover_hold_s = 60\ntakeover_hold_max_s = 30\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="takeover_hold_max_s"):
        load_config(path)


def test_a_replica_catching_up_or_a_redelivery_is_no_clone() -> None:
    """Every replica reads every status: one that was away receives a restart's two
    statuses at once, maybe out of order and twice; they are ordered as said."""
    old = Sighting("a", ("10.0.0.5",), NOW, said_ms=NOW - 60_000)
    new = Sighting("b", ("10.0.0.5",), NOW, said_ms=NOW - 30_000)
    kept = remember(remember(remember([], new), old), new)  # b first, then a, then b again
    assert [s.instance for s in kept] == ["b", "a"]
    assert duplicate_identity("loa-1", kept, NOW) is None
    again = Sighting("a", ("10.0.0.6",), NOW, said_ms=NOW - 10_000)  # a, said after b: a clone
    assert duplicate_identity("loa-1", remember(kept, again), NOW) is not None
    assert Sighting.of(old.as_json()) == old
    assert Sighting.of({"instance": "a", "ms": NOW}).said_ms == 0  # kept before ts was
