"""broadcast.recurrence through Schedule: RFC 5545 expansion, quiet hours, anchoring."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broadcast.recurrence import MISSED_QUIET, Occurrence
from tests.schedule_helpers import DAY, FAR, MIN, OWN, VN, YEAR_2027, ZONES, build, item, ms


def starts(occurrences: list[Occurrence]) -> list[str]:
    return [o.local_start for o in occurrences]


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


# --- play requests --------------------------------------------------------------------------


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


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rrule", "extra"),
    [
        # (30 February and an until before dtstart are refused by the schema: see
        # tests/test_protocol.py and tests/test_rule_refusals.py)
        ("FREQ=DAILY;COUNT=0", {}),
        ("FREQ=MINUTELY;INTERVAL=120;BYHOUR=1", {}),  # dateutil says so only as it iterates
        ("FREQ=YEARLY;BYMONTH=6", {"until": "2027-03-01T06:00:00"}),  # ends before its first
        ("FREQ=DAILY;BYMONTH=6;BYYEARDAY=1", {}),  # no 1 January in June: found in one cycle
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


# --- properties -------------------------------------------------------------------------------


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
