"""Reconnect delays: exponential with full jitter, capped, never zero.

Full jitter (a uniform draw up to the exponential bound) spreads a fleet's
reconnects after a broker restart, so a thousand Pis do not return at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable

FLOOR_FRACTION = 0.1


class Backoff:
    def __init__(
        self, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rand = rand
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failure."""
        bound = min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return max(self.base_s * FLOOR_FRACTION, self._rand() * bound)

    def reset(self) -> None:
        self.attempt = 0
