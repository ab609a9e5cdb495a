"""Rules that never fire: how long proving it takes, dateutil alone against first_start.

dateutil finds a rule empty only by searching to the year 9999; first_start
(broadcast.recurrence) searches one cycle of the calendar. CPU time, so a busy
machine does not distort it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from dateutil.rrule import rrulestr

from broadcast.recurrence import first_start

DTSTART = datetime(2026, 12, 1, 6, 30)
RULES = [
    "FREQ=YEARLY;BYMONTH=6;BYYEARDAY=1",
    "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6",
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31",
    "FREQ=DAILY;BYMONTH=6;BYYEARDAY=1",
    "FREQ=DAILY;INTERVAL=7;BYDAY=WE",
    "FREQ=HOURLY;BYMONTH=6;BYYEARDAY=1",
    "FREQ=MINUTELY;BYMONTH=6;BYYEARDAY=1",
]


def cpu_ms(run: Callable[[], object]) -> tuple[float, object]:
    start = time.process_time()
    result = run()
    return (time.process_time() - start) * 1000, result


def main() -> None:
    print(f"{'rule':42} {'dateutil ms':>12} {'first_start ms':>15}")
    for rule in RULES:
        base, first = cpu_ms(lambda r=rule: next(iter(rrulestr(r, dtstart=DTSTART)), None))
        ours, found = cpu_ms(lambda r=rule: first_start(r, DTSTART))
        assert first is None and found is None, rule
        print(f"{rule:42} {base:12.1f} {ours:15.1f}")


if __name__ == "__main__":
    main()
