"""broadcast.local_rules: the limits a commune sets, checked on a plan."""

from __future__ import annotations

from broadcast.local_rules import BroadcastRules
from tests.schedule_helpers import build, item, ms


def test_local_rules_count_sessions_per_day_length_and_weekday():
    s = build(
        item("relay", "FREQ=DAILY", "2027-01-01T05:45:00", minutes=15, priority=3),
        item("bulletin", "FREQ=DAILY", "2027-01-01T06:02:00", minutes=10),  # joins the relay
        item("noon", "FREQ=DAILY", "2027-01-01T11:00:00", minutes=5),
        item("evening", "FREQ=WEEKLY;BYDAY=MO", "2027-01-01T18:00:00", minutes=5),
        item("drill", "FREQ=DAILY", "2027-01-01T20:00:00", minutes=5, priority=9),
    )
    hanoi = BroadcastRules(
        max_sessions_per_day=2, max_session_minutes=15, allowed_weekdays=frozenset(range(5))
    )
    # Friday 1 to Monday 4 January 2027
    slots = s.plan(ms("2027-01-01T00:00:00"), ms("2027-01-05T00:00:00"))
    assert hanoi.violations(slots) == [
        "2027-01-01 05:45: a session of 27 min, at most 15",
        "2027-01-02 (Saturday): no broadcasting on this day of the week",
        "2027-01-02 05:45: a session of 27 min, at most 15",
        "2027-01-03 (Sunday): no broadcasting on this day of the week",
        "2027-01-03 05:45: a session of 27 min, at most 15",
        "2027-01-04: 3 sessions, at most 2",
        "2027-01-04 05:45: a session of 27 min, at most 15",
    ]
    rural = BroadcastRules(max_session_minutes=45)
    assert rural.violations(slots) == []
    assert BroadcastRules().sessions(slots)[0] == (
        ms("2027-01-01T05:45:00"),
        ms("2027-01-01T06:12:00"),
    )
