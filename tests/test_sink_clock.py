"""A sound card's drift from its nominal timeline, measured from when its writes return."""

from __future__ import annotations

import math
import random

import pytest

from broadcast.audio.sink_clock import SinkClock

RATE = 48_000
CHUNK = 960  # 20 ms


def _card(ppm: float, seconds: float, seed: int = 1) -> list[tuple[float, float, float]]:
    """(returned, nominal, true drift) per write to a card running ``ppm`` slow with a
    140 ms queue, taking audio a 25 ms period at a time, the scheduler adding 0-3 ms."""
    rng = random.Random(seed)
    true_rate = RATE * (1 - ppm / 1e6)
    out, n = [], 0
    while n < seconds * RATE:
        n += CHUNK
        nominal = n / RATE * 1000
        taken = math.ceil(max(0.0, n - 0.14 * RATE) / 1200) * 1200  # whole 25 ms periods
        returned = taken / true_rate * 1000 + rng.uniform(0, 3)  # on the card's own clock
        out.append((returned, nominal, n / true_rate * 1000 - nominal))
    return out


@pytest.mark.parametrize("ppm", [-50.0, 0.0, 20.0, 50.0])
def test_a_cards_drift_is_measured_within_a_millisecond(ppm: float) -> None:
    clock = SinkClock()
    for i, (returned, nominal, true) in enumerate(_card(ppm, 600)):
        clock.wrote(returned, nominal)
        if nominal < 39_000:  # until the first window and most of one more: nothing yet
            assert clock.drift_ms() == 0.0
        elif i % 500 == 0:
            assert clock.drift_ms() == pytest.approx(true, abs=1.0), nominal
    assert clock.drift_ms() == pytest.approx(true, abs=0.3)  # ten minutes: 30 ms at 50 ppm
