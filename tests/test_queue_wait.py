"""The wait a citizen's status page shows (protocol.queue_wait): one rule, both addresses."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.queue_wait import (
    DEFAULT_SERVICE_S,
    NEAR_AHEAD,
    NEAR_WAIT_S,
    estimate_wait_s,
    recent_service_times_s,
    ticket_wait,
)

times_s = st.lists(st.floats(min_value=0, max_value=7200, allow_nan=False), max_size=30)


def test_wait_estimate_uses_the_median() -> None:
    times = [300.0, 240.0, 360.0, 3600.0]  # one long land case
    assert estimate_wait_s(4, times, 2) == pytest.approx(330.0 * 4 / 2)
    assert estimate_wait_s(0, times, 1) == 0
    assert estimate_wait_s(3, [], 2) is None
    assert estimate_wait_s(3, times, 0) is None
    with pytest.raises(ValueError):
        estimate_wait_s(-1, times, 1)
    with pytest.raises(ValueError):
        estimate_wait_s(1, [-5.0], 1)


def test_without_history_the_usual_pace_stands_in_and_says_so() -> None:
    w = ticket_wait(6, [], 2)
    assert w.wait_s == pytest.approx(DEFAULT_SERVICE_S * 3)
    assert not w.from_history
    assert w.view() == {"people_ahead": 6, "wait_min": 15, "wait_guess": True, "near": False}


def test_no_open_counter_gives_no_figure() -> None:
    w = ticket_wait(5, [120.0], 0)
    assert w.wait_s is None and w.wait_min is None and not w.near
    assert ticket_wait(1, [120.0], 0).near  # one ahead is near whatever the counters


def test_near_by_people_or_by_minutes() -> None:
    assert ticket_wait(NEAR_AHEAD, [3600.0], 1).near
    assert not ticket_wait(NEAR_AHEAD + 1, [3600.0], 1).near
    assert ticket_wait(10, [60.0], 2).near  # 5 minutes
    assert not ticket_wait(11, [60.0], 2).near
    assert ticket_wait(0, [], 1).view()["wait_min"] == 0
    assert ticket_wait(1, [1.0], 3).view()["wait_min"] == 1  # never "0 minutes" with one ahead
    with pytest.raises(ValueError):
        ticket_wait(1, [], 1, default_service_s=0)


@given(ahead=st.integers(0, 500), times=times_s, counters=st.integers(0, 12))
def test_wait_rule_properties(ahead: int, times: list[float], counters: int) -> None:
    w = ticket_wait(ahead, times, counters)
    if counters == 0:
        assert w.wait_s is None
        return
    pace = statistics.median(times) if times else DEFAULT_SERVICE_S
    assert w.wait_s == pytest.approx(pace * ahead / counters)
    assert w.from_history == bool(times)
    assert w.near == (ahead <= NEAR_AHEAD or w.wait_s <= NEAR_WAIT_S)
    # one more person ahead never shortens the wait, one more counter never lengthens it
    assert ticket_wait(ahead + 1, times, counters).wait_s >= w.wait_s  # type: ignore[operator]
    assert ticket_wait(ahead, times, counters + 1).wait_s <= w.wait_s  # type: ignore[operator]
    assert w.wait_min is not None and w.wait_min * 60 >= w.wait_s


@given(
    served=st.lists(st.tuples(st.integers(0, 10**7), st.floats(0, 7200, allow_nan=False))),
    now=st.integers(0, 10**7),
    limit=st.integers(1, 25),
    window=st.integers(1, 10**7),
)
def test_recent_takes_the_latest_in_the_window(
    served: list[tuple[int, float]], now: int, limit: int, window: int
) -> None:
    got = recent_service_times_s(served, now, limit, window)
    inside = sorted((s for s in served if now - window <= s[0] <= now), reverse=True)
    assert got == [d for _, d in inside[:limit]]
    assert len(got) <= limit


def test_recent_ignores_the_future_and_the_old() -> None:
    now = 10 * 3600_000
    served = [(now - 4 * 3600_000, 999.0), (now - 60_000, 200.0), (now + 60_000, 5.0)]
    assert recent_service_times_s(served, now) == [200.0]
    with pytest.raises(ValueError):
        recent_service_times_s(served, now, limit=0)
