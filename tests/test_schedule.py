"""broadcast.schedule, recurrence, collisions, local_rules: merge, quiet hours; simulated time."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broadcast.collisions import MISSED_LATE, Slot
from broadcast.levels import Level
from broadcast.local_rules import BroadcastRules
from broadcast.recurrence import MISSED_QUIET, Occurrence
from broadcast.schedule import Schedule
from protocol.commands import QuietHours, ScheduleSet

OWN = "xaso/dev/loa-1/schedule"
THON = "xaso/grp/thon-1/schedule"
ALL = "xaso/grp/all/schedule"
VN = "Asia/Ho_Chi_Minh"
MIN = 60_000
FAR = 2**53


def item(id: str, rrule: str, dtstart: str, minutes: float = 5, **extra: Any) -> dict[str, Any]:
    """A schedule item playing a clip of ``minutes``, or the ``stream`` given in ``extra``."""
    clip = {
        "sha256": "ab" * 32,
        "url": "http://c/api/clips/ab",
        "bytes": 1000,
        "duration_ms": int(minutes * MIN),
    }
    body = {"id": id, "rrule": rrule, "dtstart": dtstart, "clip": clip, **extra}
    if "stream" in extra:
        del body["clip"]
    return body


def doc(*items: dict[str, Any], tz: str = VN) -> ScheduleSet:
    return ScheduleSet.model_validate({"version": 1, "tz": tz, "items": list(items)})


def build(*items: dict[str, Any], tz: str = VN, quiet: list[str] | None = None) -> Schedule:
    hours = [QuietHours(start=q.split("-")[0], end=q.split("-")[1]) for q in quiet or []]
    return Schedule.build([(OWN, doc(*items, tz=tz))], hours, VN)


def ms(local: str, tz: str = VN) -> int:
    """Epoch ms of a local time, computed independently of the module under test."""
    return int(datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def starts(occurrences: list[Occurrence]) -> list[str]:
    return [o.local_start for o in occurrences]


YEAR_2027 = (ms("2027-01-01T00:00:00"), ms("2028-01-01T00:00:00"))


# --- recurrence -------------------------------------------------------------------------------


def test_daily_0600_in_vietnam_is_2300_utc_the_day_before():
    s = build(item("bulletin", "FREQ=DAILY", "2027-01-01T06:00:00", minutes=10))
    jan = s.occurrences(ms("2027-01-01T00:00:00"), ms("2027-02-01T00:00:00"))
    assert len(jan) == 31
    first = jan[0]
    assert first.start_ms == 1_798_758_000_000  # 2026-12-31T23:00:00Z
    assert first.end_ms == 1_798_758_000_000 + 10 * MIN
    assert first.key == "bulletin@2027-01-01T06:00:00"
    assert first.local_start == "2027-01-01T06:00:00"
    assert first.source == OWN and first.item_id == "bulletin" and first.blocked is None
    assert jan[-1].start_ms == 1_798_758_000_000 + 30 * 86_400_000
    # the window is half open: an occurrence at its end belongs to the next one
    assert s.occurrences(first.start_ms, first.start_ms + 86_400_000) == [first]


def test_weekly_on_monday_wednesday_friday():
    s = build(item("w", "FREQ=WEEKLY;BYDAY=MO,WE,FR", "2027-01-01T07:00:00"))
    days = [
        x[8:10] for x in starts(s.occurrences(ms("2027-01-01T00:00:00"), ms("2027-02-01T00:00:00")))
    ]
    assert days == ["01", "04", "06", "08", "11", "13", "15", "18", "20", "22", "25", "27", "29"]


def test_monthly_on_the_last_day():
    s = build(item("m", "FREQ=MONTHLY;BYMONTHDAY=-1", "2027-01-01T19:00:00"))
    found = starts(s.occurrences(*YEAR_2027))
    assert [x[5:10] for x in found] == [
        "01-31",
        "02-28",
        "03-31",
        "04-30",
        "05-31",
        "06-30",
        "07-31",
        "08-31",
        "09-30",
        "10-31",
        "11-30",
        "12-31",
    ]


def test_exdates_skip_exact_local_times():
    s = build(
        item(
            "b",
            "FREQ=DAILY",
            "2027-01-01T06:00:00",
            exdates=["2027-01-03T06:00:00", "2027-01-05T06:00", "2027-01-07T07:00:00"],
        )
    )
    found = starts(s.occurrences(ms("2027-01-01T00:00:00"), ms("2027-01-09T00:00:00")))
    # 07:00 on the 7th is not an occurrence, so it skips nothing
    assert [x[8:10] for x in found] == ["01", "02", "04", "06", "07", "08"]


def test_until_is_inclusive_and_local():
    at = build(item("u", "FREQ=DAILY", "2027-01-01T06:00:00", until="2027-01-10T06:00:00"))
    before = build(item("u", "FREQ=DAILY", "2027-01-01T06:00:00", until="2027-01-10T05:59:59"))
    assert len(at.occurrences(*YEAR_2027)) == 10
    assert len(before.occurrences(*YEAR_2027)) == 9
    assert at.next_after(ms("2027-01-10T06:00:00")) is None


def test_count_with_an_exdate_counts_the_skipped_one():
    s = build(
        item("c", "FREQ=DAILY;COUNT=5", "2027-01-01T06:00:00", exdates=["2027-01-02T06:00:00"])
    )
    found = s.occurrences(0, FAR)
    assert [x[8:10] for x in starts(found)] == ["01", "03", "04", "05"]
    assert s.next_after(found[-1].start_ms) is None


def test_daylight_saving_gap_and_repeat_follow_rfc_5545():
    berlin = build(item("n", "FREQ=DAILY", "2027-03-26T02:30:00"), tz="Europe/Berlin")
    march = berlin.occurrences(ms("2027-03-27T00:00:00", "UTC"), ms("2027-03-30T00:00:00", "UTC"))
    assert [(o.local_start, o.start_ms) for o in march] == [
        ("2027-03-27T02:30:00", 1_806_111_000_000),  # 01:30Z, CET
        ("2027-03-28T02:30:00", 1_806_197_400_000),  # no 02:30 that night: 03:30 CEST = 01:30Z
        ("2027-03-29T02:30:00", 1_806_280_200_000),  # 00:30Z, CEST
    ]
    october = berlin.occurrences(ms("2027-10-30T12:00:00", "UTC"), ms("2027-10-31T12:00:00", "UTC"))
    assert [(o.local_start, o.start_ms) for o in october] == [
        ("2027-10-31T02:30:00", 1_824_942_600_000),  # 02:30 comes twice: the first, CEST
    ]
    new_york = build(item("n", "FREQ=DAILY", "2027-11-06T01:30:00"), tz="America/New_York")
    november = new_york.occurrences(
        ms("2027-11-07T00:00:00", "UTC"), ms("2027-11-09T00:00:00", "UTC")
    )
    assert [o.start_ms for o in november] == [1_825_565_400_000, 1_825_655_400_000]  # EDT, EST


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


# --- quiet hours ------------------------------------------------------------------------------


def test_quiet_hours_across_midnight_block_all_but_emergencies():
    s = build(
        item("before", "FREQ=DAILY", "2027-01-01T21:29:00", priority=2),
        item("normal", "FREQ=DAILY", "2027-01-01T22:00:00", priority=2),
        item("priority", "FREQ=DAILY", "2027-01-01T23:00:00", priority=6),
        item("emergency", "FREQ=DAILY", "2027-01-01T23:30:00", priority=7),
        item("background", "FREQ=DAILY", "2027-01-01T02:00:00", priority=0),
        item("dawn", "FREQ=DAILY", "2027-01-01T04:59:00", priority=2),
        item("end", "FREQ=DAILY", "2027-01-01T05:00:00", priority=2),
        quiet=["21:30-05:00"],
    )
    night = s.occurrences(ms("2027-01-02T12:00:00"), ms("2027-01-03T12:00:00"))
    assert {o.item_id: o.blocked for o in night} == {
        "before": None,
        "normal": MISSED_QUIET,
        "priority": MISSED_QUIET,
        "emergency": None,
        "background": MISSED_QUIET,
        "dawn": MISSED_QUIET,
        "end": None,
    }
    assert s.is_quiet(ms("2027-01-02T21:30:00")) and not s.is_quiet(ms("2027-01-02T21:29:59"))
    assert s.is_quiet(ms("2027-01-03T04:59:59")) and not s.is_quiet(ms("2027-01-03T05:00:00"))
    plan = {
        slot.occurrence.item_id: slot
        for slot in s.plan(*YEAR_2027)
        if slot.occurrence.local_start.startswith("2027-01-02")
    }
    assert plan["normal"].outcome == "missed" and plan["normal"].reason == MISSED_QUIET
    assert plan["emergency"].outcome == "completed"


def test_no_quiet_hours_and_an_empty_window():
    assert not build(quiet=[]).is_quiet(ms("2027-01-01T23:00:00"))
    assert not build(quiet=["05:00-05:00"]).is_quiet(ms("2027-01-01T05:00:00"))


# --- collisions -------------------------------------------------------------------------------


def outcomes(slots: list[Slot]) -> list[tuple[str, str, str | None, str | None, str | None]]:
    def hhmm(at: int | None) -> str | None:
        if at is None:
            return None
        return datetime.fromtimestamp(at / 1000, ZoneInfo(VN)).strftime("%H:%M")

    return [
        (s.occurrence.item_id, s.outcome, hhmm(s.start_ms), hhmm(s.end_ms), s.reason) for s in slots
    ]


DAY = (ms("2027-01-01T00:00:00"), ms("2027-01-02T00:00:00"))


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


def test_an_occurrence_becomes_a_play_request():
    s = build(
        item("bulletin", "FREQ=DAILY", "2027-01-01T06:00:00", minutes=10, gain_db=-3, label="Tin"),
        item(
            "relay",
            "FREQ=DAILY",
            "2027-01-01T18:00:00",
            stream={"url": "http://vov.example/vov1", "duration_s": 1800},
        ),
    )
    bulletin, relay = s.occurrences(*DAY)
    request = bulletin.play_request(Path("/var/lib/xaso/clips/ab"))
    assert request.origin == "schedule" and request.key == "bulletin@2027-01-01T06:00:00"
    assert request.at_ms == bulletin.start_ms and request.duration_ms == 10 * MIN
    assert request.item_id == "bulletin" and request.occurrence == "2027-01-01T06:00:00"
    assert request.gain_db == -3 and request.label == "Tin" and request.priority == 2
    assert relay.play_request().stream_url == "http://vov.example/vov1"
    assert relay.play_request().duration_ms == 1_800_000
    with pytest.raises(ValueError, match="cached path"):
        bulletin.play_request()


# --- local rules ------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("rrule", "extra"),
    [
        # (30 February is refused by the schema: see tests/test_protocol.py)
        ("FREQ=DAILY;COUNT=0", {}),
        ("FREQ=MINUTELY;INTERVAL=120;BYHOUR=1", {}),  # dateutil says so only as it iterates
        ("FREQ=DAILY", {"until": "2026-12-31T06:00:00"}),  # until before dtstart
    ],
)
def test_a_valid_document_whose_rule_yields_nothing_plays_nothing(rrule, extra):
    s = build(
        item("never", rrule, "2027-01-01T06:00:00", **extra),
        item("daily", "FREQ=DAILY;COUNT=2", "2027-01-01T07:00:00"),
    )
    assert [o.item_id for o in s.occurrences(0, FAR)] == ["daily", "daily"]
    assert s.next_after(ms("2027-01-02T07:00:00")) is None
    assert len(s.plan(*YEAR_2027)) == 2


def test_no_documents_no_occurrences():
    s = Schedule.build([])
    assert s.occurrences(0, FAR) == [] and s.next_after(0) is None and s.plan(0, FAR) == []


# --- properties -------------------------------------------------------------------------------

ZONES = [VN, "Europe/Berlin", "America/New_York"]
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


@st.composite
def open_rules(draw: st.DrawFn) -> tuple[str, datetime, datetime]:
    """A rule, its dtstart and a window start: the schedule may begin iterating near the window."""
    freq = draw(st.sampled_from(["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY"]))
    parts = [f"FREQ={freq}", f"INTERVAL={draw(st.integers(1, 5))}"]
    if freq == "MONTHLY" and draw(st.booleans()):
        days = st.sampled_from([1, 15, 28, 29, 30, 31, -1])
        parts.append(
            "BYMONTHDAY="
            + ",".join(map(str, draw(st.lists(days, min_size=1, max_size=2, unique=True))))
        )
    elif freq in ("MONTHLY", "YEARLY") and draw(st.booleans()):
        parts.append("BYDAY=" + draw(st.sampled_from(["1MO", "-1FR", "2TU,4TU", "SA"])))
    elif freq in ("WEEKLY", "DAILY") and draw(st.booleans()):
        parts.append("BYDAY=" + draw(st.sampled_from(["MO", "TU,TH", "SA,SU"])))
    if freq != "HOURLY" and draw(st.booleans()):
        parts.append(f"BYHOUR={draw(st.integers(0, 23))}")
    if draw(st.integers(0, 4)) == 0:
        parts.append(f"COUNT={draw(st.integers(1, 300))}")
    window = datetime(2026, 6, 1) + timedelta(minutes=draw(st.integers(0, 2 * 365 * 1440)))
    back = 90 if freq == "HOURLY" else 6 * 365  # keep the reference's walk from dtstart short
    dtstart = window - timedelta(minutes=draw(st.integers(-30 * 1440, back * 1440)))
    return ";".join(parts), dtstart, window


def reference(rule: str, dtstart: datetime, tz: str, a: int, b: int) -> list[tuple[str, int]]:
    """dateutil from dtstart, converted with the same fold=0 reading: what anchoring must keep."""
    low = datetime(1970, 1, 1) + timedelta(milliseconds=a) - timedelta(days=2)
    high = datetime(1970, 1, 1) + timedelta(milliseconds=b) + timedelta(days=2)
    found = []
    for local in rrulestr(rule, dtstart=dtstart).between(low, high, inc=True):
        at = int(local.replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)
        if a <= at < b:
            found.append((at, local.isoformat()))
    return [(local, at) for at, local in sorted(found)]


@settings(max_examples=100, deadline=None)
@given(open_rules(), st.sampled_from(ZONES), st.integers(1, 40 * 1440))
@example(("FREQ=MONTHLY;BYMONTHDAY=15", datetime(2020, 1, 20, 6), datetime(2027, 3, 5)), VN, 20_000)
@example(("FREQ=MONTHLY", datetime(2020, 1, 31, 6), datetime(2027, 3, 5)), VN, 50_000)
@example(("FREQ=YEARLY", datetime(2020, 2, 29, 6), datetime(2027, 3, 5)), VN, 57_600)
@example(("FREQ=DAILY;COUNT=10", datetime(2027, 1, 1, 6), datetime(2027, 1, 5)), VN, 40_000)
def test_anchoring_near_the_window_changes_nothing(rule, tz, span_minutes):
    text, dtstart, window = rule
    s = build(item("x", text, dtstart.replace(second=0, microsecond=0).isoformat()), tz=tz)
    a = ms(window.replace(second=0, microsecond=0).isoformat(), tz)
    b = a + span_minutes * MIN
    expected = reference(text, dtstart.replace(second=0, microsecond=0), tz, a, b)

    def got() -> list[tuple[str, int]]:
        return [(o.local_start, o.start_ms) for o in s.occurrences(a, b)]

    s.occurrences(b + 100 * 86_400_000, b + 130 * 86_400_000)  # anchored later: a restart behind
    assert got() == expected
    s.occurrences(a - 400 * 86_400_000, a - 300 * 86_400_000)  # and earlier: one ahead
    assert got() == expected
