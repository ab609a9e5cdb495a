"""One late policy: the calendar's preview and the player decide the same for late items.

One table of colliding and late items drives both sides: the controller's
preview (``Schedule.plan`` read as ``CalendarRow``s, exactly what
controller.radio.schedule_calendar computes) and a real Player on the
WAV-file sink, whose proof of play and recordings are checked. The rule
itself, broadcast.audio.lateness, is checked at its edges on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from broadcast.audio.lateness import FULL_GRACE_MS, JOIN_MIN_MS, Join, call_fate, join
from broadcast.audio.request import PlayRequest
from broadcast.levels import DEFAULT_PRIORITY, Level
from broadcast.schedule import Schedule
from controller.radio.schedule_calendar import CalendarRow
from protocol.commands import ScheduleSet
from tests.player_helpers import Clips, Rig, now_ms, samples, tone
from tests.schedule_helpers import OWN, VN, ms
from tests.timing import on_time

S = 1000
T0 = "2027-01-01T06:00:00"  # the preview's instant 0
# a late start decided by the player includes the lead it joins ahead with, and a busy
# machine's delays, up to the grace tests/timing allows any start; the preview's are exact
SLACK_MS = FULL_GRACE_MS


@dataclass(frozen=True)
class Item:
    key: str
    due_s: float  # from the scenario's start
    duration_s: float
    level: Level = Level.NORMAL


@dataclass(frozen=True)
class Case:
    """Items on one loudspeaker; ``late_s``: the one item reaches the device that late (an
    agent restarted, a clip fetched late). Expected per key: (fate, start_s, offset_s);
    ``rests``: a cut item's rest, played after what cut in, as (start_s, end_s) parts."""

    name: str
    items: tuple[Item, ...]
    expected: dict[str, tuple[str, float | None, float]]
    late_s: float = 0
    rests: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)


CASES = [
    Case("on time", (Item("a", 0, 3),), {"a": ("full", 0, 0)}),
    Case(
        "back to back",
        (Item("a", 0, 3), Item("b", 3, 3)),
        {"a": ("full", 0, 0), "b": ("full", 3, 0)},
    ),
    Case(
        "waits a moment: in full",
        (Item("a", 0, 3.5), Item("b", 3, 6)),
        {"a": ("full", 0, 0), "b": ("full", 3.5, 0)},
    ),
    Case(
        "waits longer: joined, ends on time",
        (Item("a", 0, 4), Item("b", 1, 10)),
        {"a": ("full", 0, 0), "b": ("shortened", 4, 3)},
    ),
    Case(
        "too little left: missed",
        (Item("a", 0, 4), Item("b", 1, 6)),
        {"a": ("full", 0, 0), "b": ("missed", None, 0)},
    ),
    Case(
        "an emergency cuts, the rest plays after it, then the waiting one joins",
        (Item("n", 0, 6), Item("e", 1, 3, Level.EMERGENCY), Item("w", 1, 20)),
        {"n": ("cut", 0, 0), "e": ("full", 1, 0), "w": ("shortened", 9, 8)},
        rests={"n": ((4, 9),)},
    ),
    Case(
        "the rest waits for a priority item that came meanwhile",
        (Item("n", 0, 6), Item("e", 1, 2, Level.EMERGENCY), Item("p", 2, 4, Level.PRIORITY)),
        {"n": ("cut", 0, 0), "e": ("full", 1, 0), "p": ("full", 3, 0)},
        rests={"n": ((7, 12),)},
    ),
    Case(
        "a rest cut again resumes again",
        (
            Item("n", 0, 6),
            Item("e1", 1, 2, Level.EMERGENCY),
            Item("e2", 5, 2, Level.EMERGENCY),
        ),
        {"n": ("cut", 0, 0), "e1": ("full", 1, 0), "e2": ("full", 5, 0)},
        rests={"n": ((3, 5), (7, 10))},
    ),
    Case("arrives a moment late", (Item("a", 0, 6),), {"a": ("full", 0.5, 0)}, late_s=0.5),
    Case("arrives late", (Item("a", 0, 10),), {"a": ("shortened", 3, 3)}, late_s=3),
    Case("arrives too late", (Item("a", 0, 6),), {"a": ("missed", None, 0)}, late_s=4),
]
IDS = [c.name for c in CASES]


# the controller's side: the calendar's rows


def _local(seconds: float) -> str:
    return (datetime.fromisoformat(T0) + timedelta(seconds=seconds)).isoformat()


def _document(items: tuple[Item, ...]) -> ScheduleSet:
    body = [
        {
            "id": i.key,
            "rrule": "FREQ=DAILY;COUNT=1",
            "dtstart": _local(i.due_s),
            "priority": DEFAULT_PRIORITY[i.level],
            "clip": {
                "sha256": "ab" * 32,
                "url": "http://c/api/clips/ab",
                "bytes": 1000,
                "duration_ms": round(i.duration_s * S),
            },
        }
        for i in items
    ]
    return msgspec.convert({"version": 1, "tz": VN, "items": body}, ScheduleSet)


def _fate(outcome: str, offset_ms: int) -> str:
    if outcome == "completed":
        return "shortened" if offset_ms else "full"
    return {"preempted": "cut", "missed": "missed"}[outcome]


Preview = tuple[
    dict[str, tuple[str, float | None, float]], dict[str, tuple[tuple[float, float], ...]]
]


def preview(case: Case) -> Preview:
    """What the calendar shows, and the rests it shows. A late arrival is no collision the
    preview can see: for it, the rule the preview's collisions apply when the loudspeaker
    comes free is asked."""
    t0 = ms(T0)
    if case.late_s:
        (only,) = case.items
        due = t0 + round(only.due_s * S)
        j = join(due, round(only.duration_s * S), due + round(case.late_s * S))
        fate = j.fate
        start = None if j.start_ms is None else (j.start_ms - t0) / S
        return {only.key: (fate, start, j.offset_ms / S)}, {}
    slots = Schedule.build([(OWN, _document(case.items))]).plan(t0 - 60 * S, t0 + 3600 * S)
    rows = [CalendarRow.of("loa-1", s) for s in slots]
    fates = {
        r.item_id: (
            _fate(r.outcome, r.offset_ms),
            None if r.start_ms is None else (r.start_ms - t0) / S,
            r.offset_ms / S,
        )
        for r in rows
    }
    rests = {
        r.item_id: tuple(((a - t0) / S, (b - t0) / S) for a, b in r.rests) for r in rows if r.rests
    }
    return fates, rests


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_calendar_preview(case: Case) -> None:
    assert preview(case) == (case.expected, case.rests)


# the device's side: a real player


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    d = tmp_path_factory.mktemp("late-tones")
    lengths = {i.duration_s for c in CASES for i in c.items}
    return {f"{s:g}": tone(d / f"tone-{s:g}s.wav", 440, s) for s in lengths}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_player(case: Case, tmp_path: Path, tones: Clips) -> None:
    rig = Rig(tmp_path)  # resume_preempted on, as the speaker's default and the preview
    try:
        # the scenario starts far enough ahead for the first item to be prepared; a late
        # arrival is submitted that long after its start
        t0 = now_ms() + (-round(case.late_s * S) if case.late_s else 2 * S)
        for i in sorted(case.items, key=lambda i: i.due_s):
            rig.player.submit(
                PlayRequest(
                    i.key,
                    "schedule",
                    DEFAULT_PRIORITY[i.level],
                    round(i.duration_s * S),
                    clip_path=tones[f"{i.duration_s:g}"],
                    at_ms=t0 + round(i.due_s * S),
                )
            )
        ended = {i.key: rig.events.ended(i.key, timeout_s=60) for i in case.items}
        for key, parts in case.rests.items():  # the rest's parts, the last one completed
            rig.events.wait("play.finished", key, count=1 + len(parts), timeout_s=60)
    finally:
        rig.player.close()

    for i in case.items:
        fate, start_s, offset_s = case.expected[i.key]
        kind, body = ended[i.key]
        if fate == "missed":
            assert (kind, body["reason"]) == ("play.missed", "late"), i.key
            continue
        assert kind == "play.finished", (i.key, body)
        assert body["outcome"] == ("preempted" if fate == "cut" else "completed"), i.key
        started = rig.events.of("play.started", i.key)[0]
        skipped = started.get("skipped_ms", 0)
        x = samples(rig.sink.dir / rig.recordings(i.key)[0][0]["file"])  # its first part
        played_ms = len(x) / 48
        if fate == "shortened":
            # joined where the preview says, give or take the player's lead and delays
            assert offset_s * S <= skipped <= offset_s * S + SLACK_MS, i.key
            # what is left of it plays, and it ends at its planned end
            assert abs(played_ms - (i.duration_s * S - skipped)) < 60, i.key
            planned_end = t0 + (i.due_s + i.duration_s) * S
            assert on_time(round(started["actual_ms"] + played_ms), planned_end), i.key
        else:
            assert skipped == 0, i.key
        if fate == "full":
            assert abs(played_ms - i.duration_s * S) < 60, i.key
        assert start_s is not None
        assert started["actual_ms"] >= t0 + start_s * S - 100, i.key
        if fate == "cut":
            _check_rests(rig, i, case.rests.get(i.key, ()), t0)


def _check_rests(rig: Rig, item: Item, parts: tuple[tuple[float, float], ...], t0: int) -> None:
    """Each part starts no earlier than the preview says, each cut one resumes, the last
    completes, and the parts add up to the whole clip."""
    starts = rig.events.of("play.started", item.key)
    ends = rig.events.of("play.finished", item.key)
    assert len(starts) == len(ends) == 1 + len(parts), item.key
    assert [e["outcome"] for e in ends] == ["preempted"] * len(parts) + ["completed"]
    assert all(e.get("resumes") for e in ends[:-1]), ends
    for (start_s, _end_s), started in zip(parts, starts[1:], strict=True):
        assert started["resumed_from_ms"] > 0 and started["actual_ms"] >= t0 + start_s * S - 100
    played_ms = sum(len(x) / 48 for _, x in rig.recordings(item.key))
    assert abs(played_ms - item.duration_s * S) < 60 * len(starts), item.key


# the rule at its edges


@pytest.mark.parametrize(
    ("late_ms", "duration_ms", "expected"),
    [
        (-5_000, 10_000, Join("full", 0, 10_000)),  # early: waits for its time
        (0, 10_000, Join("full", 0, 10_000)),
        (FULL_GRACE_MS, 10_000, Join("full", 2_000, 12_000)),  # in full, ends 2 s late
        (FULL_GRACE_MS + 1, 10_000, Join("shortened", 2_001, 10_000, 2_001)),  # ends on time
        (FULL_GRACE_MS + 1, 6_000, Join("missed")),  # 3,999 ms left: under the minimum
        (10 * 60_000, 20 * 60_000, Join("shortened", 600_000, 1_200_000, 600_000)),  # half
        (10 * 60_000 + 1, 20 * 60_000, Join("missed")),
        (5_000, 10_000, Join("shortened", 5_000, 10_000, 5_000)),  # 5 s left: the minimum
        (5_001, 10_000, Join("missed")),
        (3_000, 1_000, Join("missed")),  # over before it could start
    ],
)
def test_join(late_ms: int, duration_ms: int, expected: Join) -> None:
    assert join(0, duration_ms, late_ms) == expected


def test_join_refuses_an_item_without_length() -> None:
    with pytest.raises(ValueError, match="positive"):
        join(0, 0, 0)


def test_no_join_leaves_less_than_the_minimum() -> None:
    for duration in range(1_000, 30_000, 250):
        for late in range(0, duration, 250):
            j = join(0, duration, late)
            if j.fate == "shortened":
                assert j.end_ms == duration and duration - late >= JOIN_MIN_MS


@pytest.mark.parametrize(
    ("age_ms", "expected"),
    [(0, None), (119_999, None), (120_000, None), (120_001, "expired"), (-120_001, "clock")],
)
def test_call_fate(age_ms: int, expected: str | None) -> None:
    assert call_fate(1_000_000, 1_000_000 + age_ms) == expected
    with pytest.raises(ValueError, match="positive"):
        call_fate(0, 0, 0)
