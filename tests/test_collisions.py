"""broadcast.collisions through Schedule.plan: what plays, waits, is cut or missed."""

from __future__ import annotations

from broadcast.collisions import MISSED_LATE
from broadcast.levels import Level
from broadcast.recurrence import MISSED_QUIET
from tests.schedule_helpers import DAY, MIN, build, item, outcomes


def test_emergency_cuts_a_normal_item_and_the_cut_is_recorded():
    s = build(
        item("normal", "FREQ=DAILY;COUNT=1", "2027-01-01T06:00:00", minutes=10, priority=2),
        item("storm", "FREQ=DAILY;COUNT=1", "2027-01-01T06:04:00", minutes=2, priority=9),
    )
    slots = s.plan(*DAY)
    assert outcomes(slots) == [
        ("normal", "preempted", "06:00", "06:04", None),
        ("storm", "completed", "06:04", "06:06", None),
    ]
    assert slots[0].preempted_by == "storm@2027-01-01T06:04:00"
    assert slots[1].occurrence.level is Level.EMERGENCY


def test_equal_priority_queues_and_too_late_is_missed():
    s = build(
        item("a", "FREQ=DAILY;COUNT=1", "2027-01-01T06:00:00", minutes=10),
        item("b", "FREQ=DAILY;COUNT=1", "2027-01-01T06:05:00", minutes=5),
        item("c", "FREQ=DAILY;COUNT=1", "2027-01-01T07:00:00", minutes=30),
        item("d", "FREQ=DAILY;COUNT=1", "2027-01-01T07:05:00", minutes=5),
    )
    slots = s.plan(*DAY)
    assert outcomes(slots) == [
        ("a", "completed", "06:00", "06:10", None),
        ("b", "completed", "06:10", "06:15", None),  # queued behind a
        ("c", "completed", "07:00", "07:30", None),
        ("d", "missed", None, None, MISSED_LATE),  # would start 25 minutes late
    ]
    assert slots[1].delay_ms == 5 * MIN
    patient = s.plan(*DAY, max_delay_ms=30 * MIN)
    assert outcomes(patient)[3] == ("d", "completed", "07:30", "07:35", None)


def test_after_a_cut_the_queue_goes_on_highest_priority_first():
    s = build(
        item("normal", "FREQ=DAILY;COUNT=1", "2027-01-01T06:00:00", minutes=10, priority=2),
        item("waits", "FREQ=DAILY;COUNT=1", "2027-01-01T06:01:00", minutes=5, priority=1),
        item("higher", "FREQ=DAILY;COUNT=1", "2027-01-01T06:02:00", minutes=5, priority=2),
        item("storm", "FREQ=DAILY;COUNT=1", "2027-01-01T06:03:00", minutes=2, priority=8),
    )
    assert outcomes(s.plan(*DAY)) == [
        ("normal", "preempted", "06:00", "06:03", None),
        ("waits", "completed", "06:10", "06:15", None),  # lower priority waits longest
        ("higher", "completed", "06:05", "06:10", None),
        ("storm", "completed", "06:03", "06:05", None),
    ]


def test_a_queued_item_pushed_into_quiet_hours_is_missed():
    s = build(
        item("long", "FREQ=DAILY;COUNT=1", "2027-01-01T21:50:00", minutes=15),
        item("after", "FREQ=DAILY;COUNT=1", "2027-01-01T21:55:00", minutes=5),
        quiet=["22:00-05:00"],
    )
    assert outcomes(s.plan(*DAY))[1] == ("after", "missed", None, None, MISSED_QUIET)
