"""What a test may say about when audio played, on a machine that may be busy.

A loaded CI machine makes a play late, never early. So a test asserts that a
play was planned for its instant, did not start before it, and started within
the grace in which the player itself still calls it on time
(`broadcast.audio.lateness.FULL_GRACE_MS`): later than that, the player would
have joined it in progress or missed it, and said so. How close to the
instant a play starts, and how closely speakers keep in step, are figures for
bench/ (docs/benchmarks.md), not assertions.
"""

from __future__ import annotations

from broadcast.audio.lateness import FULL_GRACE_MS

# The first sample may be handed to the sound device a little ahead of the
# instant: the player starts the sink by its reported latency.
EARLY_MS = 100


def on_time(actual_ms: int, planned_ms: int) -> bool:
    return planned_ms - EARLY_MS <= actual_ms <= planned_ms + FULL_GRACE_MS
