"""broadcast.schedule: merge of a device's documents and the Schedule API; simulated time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcast.recurrence import MISSED_QUIET, Occurrence
from broadcast.schedule import Schedule
from protocol.commands import QuietHours
from tests.schedule_helpers import FAR, MIN, OWN, YEAR_2027, ZONES, build, doc, item, ms, outcomes

THON = "xaso/grp/thon-1/schedule"
ALL = "xaso/grp/all/schedule"


# --- merge ------------------------------------------------------------------------------------


def test_own_and_group_documents_merge_and_own_item_overrides_same_id():
    own = doc(item("bulletin", "FREQ=DAILY", "2027-01-01T06:30:00", minutes=3, priority=3))
    thon = doc(
        item("bulletin", "FREQ=DAILY", "2027-01-01T06:00:00"),
        item("thon-notice", "FREQ=DAILY", "2027-01-01T07:00:00"),
        item("shared", "FREQ=DAILY", "2027-01-01T08:00:00", label="from thon-1"),
    )
    every = doc(
        item("shared", "FREQ=DAILY", "2027-01-01T09:00:00", label="from all"), tz="Europe/Berlin"
    )
    s = Schedule.build([(THON, thon), (OWN, own), (ALL, every)])
    day = s.occurrences(ms("2027-01-01T00:00:00"), ms("2027-01-02T00:00:00"))
    assert [(o.key, o.source) for o in day] == [
        ("bulletin@2027-01-01T06:30:00", OWN),  # the device's own replaces thon-1's 06:00
        ("thon-notice@2027-01-01T07:00:00", THON),
        ("shared@2027-01-01T09:00:00", ALL),  # between groups the first topic wins, in its tz
    ]
    assert day[0].priority == 3 and day[0].duration_ms == 3 * MIN
    assert day[2].start_ms == ms("2027-01-01T09:00:00", "Europe/Berlin")


def test_a_source_that_is_not_a_schedule_topic_is_refused():
    with pytest.raises(ValueError, match="schedule topic"):
        Schedule.build([("xaso/dev/loa-1/config", doc())])


# --- plan and upcoming -----------------------------------------------------------------------


def test_plan_shows_what_is_under_way_and_what_plays_next():
    s = build(
        item(
            "relay",
            "FREQ=DAILY",
            "2027-01-01T05:45:00",
            stream={"url": "http://vov.example/vov1", "duration_s": 900},
            priority=3,
        ),
        item("bulletin", "FREQ=DAILY", "2027-01-01T06:00:00", minutes=10),
    )
    now = ms("2027-01-01T05:50:00")
    slots = s.plan(now, now + 3_600_000)
    assert outcomes(slots) == [
        ("relay", "completed", "05:45", "06:00", None),  # under way at now
        ("bulletin", "completed", "06:00", "06:10", None),  # the relay ends as it starts
    ]
    upcoming = s.upcoming(now, 3_600_000)
    assert [o.item_id for o in upcoming] == ["relay", "bulletin"]
    assert s.next_after(now) == upcoming[1]
    after = s.next_after(upcoming[1].start_ms)
    assert after is not None and after.key == "relay@2027-01-02T05:45:00"


# --- a year of a commune ----------------------------------------------------------------------


def commune() -> Schedule:
    vov = {"url": "http://vov.example/vov1"}
    own = doc(
        item(
            "vov-morning",
            "FREQ=DAILY",
            "2026-06-01T05:45:00",
            stream={**vov, "duration_s": 900},
            priority=3,
        ),
        item(
            "bulletin",
            "FREQ=DAILY",
            "2026-06-01T06:00:00",
            minutes=10,
            exdates=["2027-02-06T06:00:00", "2027-09-02T06:00:00"],
        ),  # Tết, National Day
        item(
            "vov-evening",
            "FREQ=DAILY",
            "2026-06-01T18:00:00",
            stream={**vov, "duration_s": 1800},
            priority=3,
        ),
    )
    thon = doc(
        item(
            "meeting",
            "FREQ=WEEKLY;BYDAY=FR",
            "2026-06-05T17:00:00",
            minutes=3,
            exdates=["2027-02-05T17:00:00"],
        ),
        item("month-end", "FREQ=MONTHLY;BYMONTHDAY=-1", "2026-06-30T19:00:00", minutes=4),
        item("night-patrol", "FREQ=WEEKLY;BYDAY=SA", "2026-06-06T22:30:00", minutes=2),
    )
    return Schedule.build([(OWN, own), (THON, thon)], [QuietHours(start="22:00", end="05:00")])


def test_a_year_of_a_commune():
    """A year of simulated time, exact to the millisecond (its speed: bench/schedule_year.py)."""
    s = commune()
    year = s.occurrences(*YEAR_2027)
    plan = s.plan(*YEAR_2027)

    by_item: dict[str, list[Occurrence]] = {}
    for o in year:
        by_item.setdefault(o.item_id, []).append(o)
    assert {k: len(v) for k, v in by_item.items()} == {
        "vov-morning": 365,
        "bulletin": 363,
        "vov-evening": 365,
        "meeting": 52,  # 53 Fridays in 2027, less the one before Tết
        "month-end": 12,
        "night-patrol": 52,
    }
    assert by_item["vov-morning"][0].start_ms == 1_798_757_100_000  # 2026-12-31T22:45:00Z
    assert by_item["bulletin"][0].start_ms == 1_798_758_000_000
    assert by_item["bulletin"][-1].start_ms == 1_830_207_600_000  # 2027-12-30T23:00:00Z
    assert by_item["meeting"][0].local_start == "2027-01-01T17:00:00"
    assert by_item["meeting"][-1].local_start == "2027-12-31T17:00:00"
    assert by_item["month-end"][1].local_start == "2027-02-28T19:00:00"
    assert by_item["month-end"][-1].start_ms == ms("2027-12-31T19:00:00")
    assert all(o.blocked == MISSED_QUIET for o in by_item["night-patrol"])
    assert not any(o.blocked for o in year if o.item_id != "night-patrol")

    assert len(plan) == len(year)
    missed = [p for p in plan if p.outcome == "missed"]
    assert {p.occurrence.item_id for p in missed} == {"night-patrol"} and len(missed) == 52
    assert all(p.outcome == "completed" and p.delay_ms == 0 for p in plan if p not in missed)

    tet = s.next_after(ms("2027-02-06T05:50:00"))
    assert tet is not None and tet.key == "vov-evening@2027-02-06T18:00:00"


def dense_schedule() -> Schedule:
    items = [
        item(
            f"item-{n}",
            f"FREQ=DAILY;BYHOUR=6,10,14,19;BYMINUTE={n * 5}",
            "2020-01-01T00:00:00",
            minutes=2,
            priority=n % 10,
        )
        for n in range(10)
    ]
    return Schedule.build([(OWN, doc(*items))])


def test_a_dense_schedule_for_a_year_and_asking_again():
    s = dense_schedule()
    first = s.occurrences(*YEAR_2027)
    assert len(first) == 10 * 4 * 365 and first == s.occurrences(*YEAR_2027)


# --- bad input --------------------------------------------------------------------------------


def test_no_documents_no_occurrences():
    s = Schedule.build([])
    assert s.occurrences(0, FAR) == [] and s.next_after(0) is None and s.plan(0, FAR) == []


# --- properties -------------------------------------------------------------------------------

START = datetime(2027, 1, 1)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    freq = draw(st.sampled_from(["DAILY", "WEEKLY"]))
    hours = draw(st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))
    minutes = draw(st.lists(st.integers(0, 59), min_size=1, max_size=2, unique=True))
    rule = f"FREQ={freq};BYHOUR={','.join(map(str, hours))};BYMINUTE={','.join(map(str, minutes))}"
    if freq == "WEEKLY" and draw(st.booleans()):
        days = draw(
            st.lists(
                st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        rule += ";BYDAY=" + ",".join(days)
    rule += f";COUNT={draw(st.integers(1, 50))}"
    dtstart = START + timedelta(minutes=draw(st.integers(0, 366 * 24 * 60)))
    return item(
        "r",
        rule,
        dtstart.isoformat(),
        minutes=draw(st.integers(1, 90)),
        priority=draw(st.integers(0, 9)),
    )


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    items = [
        {**body, "id": f"r{n}"}
        for n, body in enumerate(draw(st.lists(rules(), min_size=1, max_size=3)))
    ]
    quiet = draw(st.sampled_from([[], ["21:30-05:00"], ["12:00-13:00", "23:00-04:00"]]))
    return build(*items, tz=draw(st.sampled_from(ZONES)), quiet=quiet)


instants = st.integers(ms("2026-12-01T00:00:00"), ms("2029-03-01T00:00:00"))


@settings(max_examples=100, deadline=None)
@given(schedules(), st.lists(instants, min_size=3, max_size=3))
def test_occurrences_split_anywhere_and_stay_in_the_window(s, cuts):
    a, m, b = sorted(cuts)
    whole = s.occurrences(a, b)
    assert whole == s.occurrences(a, m) + s.occurrences(m, b)
    assert all(a <= o.start_ms < b for o in whole)
    assert len({o.key for o in whole}) == len(whole)


@settings(max_examples=100, deadline=None)
@given(schedules(), instants)
def test_next_after_is_the_first_of_everything_later(s, t):
    later = s.occurrences(t + 1, FAR)
    assert s.next_after(t) == (later[0] if later else None)
