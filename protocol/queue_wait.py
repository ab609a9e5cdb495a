"""The wait a citizen is told: one rule for the kiosk and the controller (pure, no I/O).

A ticket's status page is served by the kiosk on the office network and by the
controller's public address, from the kiosk's ticket file and from the ``ticket.*``
events respectively. Both tell the phone the same estimate, so both use this rule:
the median of the recent service times (call to done) of the ticket's queue, times
the people ahead, over the counters open for it. Without history the office's
usual service time stands in (``DEFAULT_SERVICE_S``), and the page says it is a
rough guess. The turn is near ("Sắp đến lượt") with at most ``NEAR_AHEAD`` people
ahead or an estimate of at most ``NEAR_WAIT_S``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_SERVICE_S = 300.0  # five minutes a citizen: the usual one-stop office figure
RECENT_SERVED = 20  # the latest services the median is taken over
RECENT_WINDOW_MS = 3 * 3600_000  # older services say little about today's pace
NEAR_AHEAD = 2
NEAR_WAIT_S = 300.0


@dataclass(frozen=True)
class Wait:
    people_ahead: int
    wait_s: float | None  # None with no counter open for the queue: no honest figure
    from_history: bool  # False: the office's usual service time stood in
    near: bool  # "Sắp đến lượt"

    @property
    def wait_min(self) -> int | None:
        """Whole minutes for the page (at least 1 while someone is ahead)."""
        if self.wait_s is None:
            return None
        minutes = math.ceil(self.wait_s / 60)
        return max(minutes, 1 if self.people_ahead else 0)

    def view(self) -> dict[str, Any]:
        """The fields both status pages render (and the kiosk's JSON carries)."""
        return {
            "people_ahead": self.people_ahead,
            "wait_min": self.wait_min,
            "wait_guess": not self.from_history,
            "near": self.near,
        }


def estimate_wait_s(
    people_ahead: int, recent_service_times_s: Sequence[float], counters_open: int
) -> float | None:
    """Median recent service time × people ahead ÷ open counters (None without history).

    The median, not the mean: one long land case should not frighten the whole
    hall. None without history or without an open counter: what a ticket prints
    and ``ticket.issued`` carries, where a default would read as a promise.
    """
    if people_ahead < 0:
        raise ValueError(f"people_ahead must be >= 0, not {people_ahead}")
    if any(t < 0 for t in recent_service_times_s):
        raise ValueError("service times must be >= 0")
    if not recent_service_times_s or counters_open <= 0:
        return None
    return statistics.median(recent_service_times_s) * people_ahead / counters_open


def recent_service_times_s(
    served: Sequence[tuple[int, float]],
    now_ms: int,
    limit: int = RECENT_SERVED,
    window_ms: int = RECENT_WINDOW_MS,
) -> list[float]:
    """The latest ``limit`` service times among ``served`` (``(served_ms, service_s)``)
    that ended in the ``window_ms`` before ``now_ms``; newest first."""
    if limit <= 0 or window_ms <= 0:
        raise ValueError("limit and window_ms must be > 0")
    recent = sorted((s for s in served if now_ms - window_ms <= s[0] <= now_ms), reverse=True)
    return [duration for _at, duration in recent[:limit]]


def ticket_wait(
    people_ahead: int,
    recent_service_times_s: Sequence[float],
    counters_open: int,
    default_service_s: float = DEFAULT_SERVICE_S,
) -> Wait:
    """What a waiting ticket's page says: the estimate, whether it is a guess, and near."""
    if default_service_s <= 0:
        raise ValueError(f"default_service_s must be > 0, not {default_service_s}")
    wait = estimate_wait_s(people_ahead, recent_service_times_s, counters_open)
    from_history = wait is not None
    if wait is None and counters_open > 0:
        wait = default_service_s * people_ahead / counters_open
    near = people_ahead <= NEAR_AHEAD or (wait is not None and wait <= NEAR_WAIT_S)
    return Wait(people_ahead, wait, from_history, near)
