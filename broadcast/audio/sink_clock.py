"""How far a sound card has drifted from the wall clock, from when its writes return.

The player keeps a stream on its timeline by the sink's nominal timeline: the
first write's instant plus the samples since at 48 kHz. A card's crystal runs
some 20-50 ppm off, so over an hour's relay its real timeline parts from that
by 70 to 180 ms. A write to a full card returns once the card has made room,
so a write's return time less the nominal time of its last sample is the
card's queue, plus its drift, plus noise (its period, the scheduler). Its
mean over the first ``window_s`` once the queue has filled (``settle_s``) and
over the latest ``window_s`` give the drift's rate, and so the drift since
the first write, where the player lined the stream up. Pure: the player gives
it the times.
"""

from __future__ import annotations

from collections import deque


class SinkClock:
    """The drift of one sink session's card, in ms: positive, the card runs slow."""

    def __init__(self, *, settle_s: float = 2.0, window_s: float = 20.0) -> None:
        self.settle_ms, self.window_ms = settle_s * 1000, window_s * 1000
        self._start: float | None = None
        self._age = 0.0  # of the latest write, from the first
        self._base = [0.0, 0.0, 0]  # sums of ages and offsets, and their count
        self._recent: deque[tuple[float, float]] = deque()  # (age, offset)
        self._recent_sums = [0.0, 0.0]

    def wrote(self, returned_ms: float, nominal_ms: float) -> None:
        """A write returned at ``returned_ms``; its last sample's nominal time."""
        if self._start is None:
            self._start = nominal_ms
        self._age = age = nominal_ms - self._start
        offset = returned_ms - nominal_ms
        if age < self.settle_ms:
            return
        if age < self.settle_ms + self.window_ms:
            self._base[0] += age
            self._base[1] += offset
            self._base[2] += 1
            return
        self._recent.append((age, offset))
        self._recent_sums[0] += age
        self._recent_sums[1] += offset
        while self._recent[0][0] < age - self.window_ms:
            old_age, old_offset = self._recent.popleft()
            self._recent_sums[0] -= old_age
            self._recent_sums[1] -= old_offset

    def drift_ms(self) -> float:
        """How much later than nominal the card plays now; 0 until measured."""
        n_base, n_recent = int(self._base[2]), len(self._recent)
        if not n_base or not n_recent:
            return 0.0
        if self._recent[-1][0] - self._recent[0][0] < self.window_ms * 0.9:
            return 0.0  # the latest window is not full yet
        base_age, base_offset = self._base[0] / n_base, self._base[1] / n_base
        age, offset = self._recent_sums[0] / n_recent, self._recent_sums[1] / n_recent
        return (offset - base_offset) / (age - base_age) * self._age
