"""A year of a dense schedule: the edge's Schedule against plain dateutil.

Ten items, four times a day each, dtstart in 2020, queried for 2027: the
Schedule (merge, tz, quiet hours, ordering) cold and warm, and the baseline,
dateutil's own rrule.between over the same rules in the same run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import msgspec
from dateutil.rrule import rrulestr

from broadcast.schedule import Schedule
from protocol.commands import ScheduleSet

YEAR = (1_798_736_400_000, 1_830_272_400_000)  # 2027 in Asia/Ho_Chi_Minh
CLIP = {"sha256": "a" * 64, "url": "http://c/x", "bytes": 1, "duration_ms": 120_000}
T = TypeVar("T")
RULES = [f"FREQ=DAILY;BYHOUR=6,10,14,19;BYMINUTE={n * 5}" for n in range(10)]


def schedule() -> Schedule:
    items = [
        {
            "id": f"item-{n}",
            "clip": CLIP,
            "rrule": rule,
            "dtstart": "2020-01-01T00:00:00",
            "priority": n % 10,
        }
        for n, rule in enumerate(RULES)
    ]
    doc = msgspec.convert({"version": 1, "items": items}, ScheduleSet)
    return Schedule.build([("xaso/dev/b/schedule", doc)])


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.process_time()
    result = fn()
    return result, (time.process_time() - start) * 1000


def main() -> int:
    s = schedule()
    found, cold_ms = timed(lambda: s.occurrences(*YEAR))
    _, warm_ms = timed(lambda: s.occurrences(*YEAR))
    _, plan_ms = timed(lambda: s.plan(*YEAR))

    def baseline() -> int:
        start, end = datetime(2027, 1, 1), datetime(2028, 1, 1)
        return sum(
            len(rrulestr(rule, dtstart=datetime(2020, 1, 1)).between(start, end, inc=True))
            for rule in RULES
        )

    count, base_ms = timed(baseline)
    print(f"occurrences in 2027: Schedule {len(found)}, dateutil {count}")
    print(f"{'step':<38}{'CPU ms':>9}")
    for label, value in (
        ("dateutil rrule.between (baseline)", base_ms),
        ("Schedule.occurrences, first ask", cold_ms),
        ("Schedule.occurrences, asked again", warm_ms),
        ("Schedule.plan (collisions resolved)", plan_ms),
    ):
        print(f"{label:<38}{value:>9.1f}")
    print(f"first ask / baseline: x{cold_ms / base_ms:.2f}")
    print(f"asked again / baseline: x{warm_ms / base_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
