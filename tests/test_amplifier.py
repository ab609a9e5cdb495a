"""The amplifier relay on gpiozero's MockFactory: pin states over real (short) time.

A fresh factory per test: MockFactory keeps pin state between tests
(PITFALLS, "Audio on the Pi").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from broadcast.audio.amplifier import Amplifier

PIN = 17
Make = Callable[..., tuple[Amplifier, "Changes"]]
TOLERANCE_MS = 50


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


class Changes:
    """on_change calls, with the wall-clock time each came."""

    def __init__(self) -> None:
        self.items: list[tuple[float, bool, str]] = []
        self._cond = threading.Condition()

    def __call__(self, on: bool, reason: str) -> None:
        with self._cond:
            self.items.append((now_ms(), on, reason))
            self._cond.notify_all()

    def wait(self, count: int, timeout_s: float = 5) -> list[tuple[float, bool, str]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= count, timeout_s), self.items
            return list(self.items)


def now_ms() -> float:
    return time.time_ns() / 1e6


@pytest.fixture
def make(factory: MockFactory) -> Iterator[Make]:
    made: list[Amplifier] = []

    def build(**kw: Any) -> tuple[Amplifier, Changes]:
        changes = Changes()
        amp = Amplifier(PIN, pin_factory=factory, on_change=changes, **kw)
        made.append(amp)
        return amp, changes

    yield build
    for amp in made:
        amp.close()


@pytest.mark.parametrize("active_high", [True, False])
def test_the_relay_is_never_on_at_construction(
    factory: MockFactory, make: Make, active_high: bool
) -> None:
    amp, changes = make(active_high=active_high)
    pin = factory.pin(PIN)
    off_level = not active_high
    assert pin.state is off_level
    # states[0] is the mock's reading before the pin became an output
    assert all(s.state is off_level for s in pin.states[1:])
    assert not amp.is_on
    time.sleep(0.1)
    assert changes.items == []


def test_an_active_low_board_is_driven_low_for_on(factory: MockFactory, make: Make) -> None:
    amp, changes = make(active_high=False, preroll_ms=0, hold_s=0.2)
    amp.on_at(now_ms())
    assert factory.pin(PIN).state is False  # low: the relay conducts
    changes.wait(2)
    assert factory.pin(PIN).state is True
    assert [on for _, on, _ in changes.items] == [True, False]


def test_on_a_preroll_before_a_planned_start(factory: MockFactory, make: Make) -> None:
    amp, changes = make(preroll_ms=300, hold_s=0.2)
    start = now_ms() + 600
    assert amp.on_at(start) == start  # enough notice: the start stays exact
    assert factory.pin(PIN).state is False
    (on_ms, on, reason), *_ = changes.wait(1)
    assert (on, reason) == (True, "preroll")
    assert abs(on_ms - (start - 300)) < TOLERANCE_MS
    assert amp.is_on


def test_short_notice_moves_the_start_back_by_the_preroll(factory: MockFactory, make: Make) -> None:
    amp, _ = make(preroll_ms=400, hold_s=1)
    asked = now_ms()
    ready = amp.on_at(asked)
    assert factory.pin(PIN).state is True  # on at once
    assert ready - asked == pytest.approx(400, abs=TOLERANCE_MS)
    # already on long enough: later starts are not delayed
    time.sleep(0.45)
    later = now_ms() + 10
    assert amp.on_at(later) == later


def test_a_preroll_longer_than_the_hold_stays_on_until_the_first_sample(
    factory: MockFactory, make: Make
) -> None:
    """Short notice: the start moves back by the pre-roll, and the amplifier is held
    from that start, not from the one asked for (a live stream's relay met this)."""
    amp, changes = make(preroll_ms=800, hold_s=0.2)
    ready = amp.on_at(now_ms())
    (_, on, _), (off_ms, off, reason) = changes.wait(2)
    assert (on, off, reason) == (True, False, "idle")
    assert off_ms >= ready + 200  # on through the first sample, then the hold


def test_off_after_the_hold_once_nothing_plays(factory: MockFactory, make: Make) -> None:
    amp, changes = make(preroll_ms=0, hold_s=0.3)
    amp.on_at(now_ms())
    end = now_ms() + 400
    for _ in range(4):  # the player tells the amplifier while it plays
        amp.need(end)
        time.sleep(0.1)
    assert factory.pin(PIN).state is True
    (_, _, _), (off_ms, on, reason) = changes.wait(2)
    assert (on, reason) == (False, "idle")
    assert abs(off_ms - (end + 300)) < TOLERANCE_MS
    assert factory.pin(PIN).state is False


def test_off_then_on_again_for_a_later_start(factory: MockFactory, make: Make) -> None:
    amp, changes = make(preroll_ms=200, hold_s=0.1)
    amp.on_at(now_ms())
    second = now_ms() + 800  # after the first hold has run out
    amp.on_at(second)
    items = changes.wait(3)
    assert [(on, why) for _, on, why in items] == [
        (True, "preroll"),
        (False, "idle"),
        (True, "preroll"),
    ]
    assert abs(items[2][0] - (second - 200)) < TOLERANCE_MS


def test_close_drives_the_relay_off(factory: MockFactory) -> None:
    changes = Changes()
    amp = Amplifier(
        PIN, active_high=False, preroll_ms=0, hold_s=60, pin_factory=factory, on_change=changes
    )
    amp.on_at(now_ms())
    assert factory.pin(PIN).state is False
    amp.close()
    assert factory.pin(PIN).state is True
    assert [(on, why) for _, on, why in changes.wait(2)] == [(True, "preroll"), (False, "shutdown")]


def test_a_failing_callback_does_not_stop_the_relay(factory: MockFactory) -> None:
    def boom(on: bool, reason: str) -> None:
        raise RuntimeError("telemetry down")

    amp = Amplifier(PIN, preroll_ms=0, hold_s=0.1, pin_factory=factory, on_change=boom)
    try:
        amp.on_at(now_ms())
        time.sleep(0.3)
        assert factory.pin(PIN).state is False  # went off on time all the same
    finally:
        amp.close()
