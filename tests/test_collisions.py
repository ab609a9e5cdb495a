"""broadcast.collisions through Schedule.plan: what plays, waits, is cut or missed."""

from __future__ import annotations

from broadcast.collisions import MISSED_LATE, resolve
from broadcast.levels import Level
from broadcast.recurrence import MISSED_QUIET
from tests.schedule_helpers import DAY, MIN, build, item, ms, outcomes


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


def test_equal_priority_waits_and_starts_late_as_the_late_rule_says():
    s = build(
        item("a", "FREQ=DAILY;COUNT=1", "2027-01-01T06:00:00", minutes=10),
        item("b", "FREQ=DAILY;COUNT=1", "2027-01-01T06:07:00", minutes=6),
        item("c", "FREQ=DAILY;COUNT=1", "2027-01-01T07:00:00", minutes=30),
        item("d", "FREQ=DAILY;COUNT=1", "2027-01-01T07:05:00", minutes=5),
        item("e", "FREQ=DAILY;COUNT=1", "2027-01-01T08:00:00", minutes=10),
        item("f", "FREQ=DAILY;COUNT=1", "2027-01-01T08:10:00", minutes=5),
    )
    slots = s.plan(*DAY)
    assert outcomes(slots) == [
        ("a", "completed", "06:00", "06:10", None),
        ("b", "completed", "06:10", "06:13", None),  # joined 3 minutes in: ends on time
        ("c", "completed", "07:00", "07:30", None),
        ("d", "missed", None, None, MISSED_LATE),  # nothing of it left by 07:30
        ("e", "completed", "08:00", "08:10", None),
        ("f", "completed", "08:10", "08:15", None),  # back to back: on time, in full
    ]
    assert (slots[1].delay_ms, slots[1].offset_ms, slots[1].shortened) == (3 * MIN, 3 * MIN, True)
    assert not slots[5].shortened


QUEUE = (
    item("normal", "FREQ=DAILY;COUNT=1", "2027-01-01T06:00:00", minutes=10, priority=2),
    item("waits", "FREQ=DAILY;COUNT=1", "2027-01-01T06:01:00", minutes=40, priority=1),
    item("higher", "FREQ=DAILY;COUNT=1", "2027-01-01T06:02:00", minutes=20, priority=2),
    item("storm", "FREQ=DAILY;COUNT=1", "2027-01-01T06:03:00", minutes=2, priority=8),
)


def test_after_a_cut_the_rest_goes_on_first_then_the_highest_priority():
    slots = build(*QUEUE).plan(*DAY)
    assert outcomes(slots) == [
        ("normal", "preempted", "06:00", "06:03", None),
        ("waits", "missed", None, None, MISSED_LATE),  # lower priority waits: too long
        ("higher", "completed", "06:12", "06:22", None),  # joined 10 minutes in: ends on time
        ("storm", "completed", "06:03", "06:05", None),
    ]
    # the rest of what the storm cut is the earliest waiting: it plays first, never late
    assert slots[0].rests == ((ms("2027-01-01T06:05:00"), ms("2027-01-01T06:12:00")),)
    assert slots[0].last_end_ms == ms("2027-01-01T06:12:00")


def test_without_resuming_a_cut_item_is_over_and_the_queue_goes_on():
    s = build(*QUEUE)
    slots = resolve(s.occurrences(*DAY), s.quiet, resume=False)
    assert outcomes(slots) == [
        ("normal", "preempted", "06:00", "06:03", None),
        ("waits", "missed", None, None, MISSED_LATE),
        ("higher", "completed", "06:05", "06:22", None),  # joined 3 minutes in
        ("storm", "completed", "06:03", "06:05", None),
    ]
    assert slots[0].rests == ()


def test_a_queued_item_pushed_into_quiet_hours_is_missed():
    s = build(
        item("long", "FREQ=DAILY;COUNT=1", "2027-01-01T21:50:00", minutes=15),
        item("after", "FREQ=DAILY;COUNT=1", "2027-01-01T21:58:00", minutes=20),
        quiet=["22:00-05:00"],
    )
    assert outcomes(s.plan(*DAY))[1] == ("after", "missed", None, None, MISSED_QUIET)
