"""The one late policy: what becomes of an item that cannot start on time, and of a late call.

Pure: no I/O and no clock; every instant is epoch milliseconds, passed in.
A scheduled item (or a timed command) is asked ``join`` by the player when it
takes the request, by the speaker's runner for an occurrence it finds
already under way, and by the conflict preview (broadcast.collisions, under
``Schedule.plan`` and the controller's calendar) when the loudspeaker comes
free: one rule, so what the preview shows is what the device does. It is in
the audio layer because the player asks it, and the queue's calls may reach
the radio only through that layer (pyproject.toml, import contracts).

- Up to ``FULL_GRACE_MS`` late it plays in full from its start (it ends that
  much late).
- Later, it is joined in progress: it starts at the point it would have
  reached by now and ends at its planned end, so the next item is not pushed
  back; while at least ``JOIN_MIN_SHARE`` of it, and ``JOIN_MIN_MS``, is left.
- Otherwise it is missed (``MISSED_LATE``).

A spoken queue call has its own rule (``call_fate``): it is said however long
it waited behind other audio, until it is ``max_age_ms`` old. Why these
numbers: docs/controller-broadcast.md, "Late items and late calls".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FULL_GRACE_MS = 2_000
JOIN_MIN_SHARE = 0.5
JOIN_MIN_MS = 5_000
CALL_MAX_AGE_MS = 120_000  # the default of [speaker] call_max_age_s, and of a kiosk's own calls
MISSED_LATE = "late"
CALL_EXPIRED = "expired"  # play.missed reason: older than the call's max age when its turn came
CALL_SUPERSEDED = "superseded"  # the ticket was called again, served or moved before it was said
CALL_CLOCK = "clock"  # from further in the future than the max age: the kiosk's clock is ahead

Fate = Literal["full", "shortened", "missed"]


@dataclass(frozen=True)
class Join:
    """How an item plays: from ``offset_ms`` into it, ``start_ms`` to ``end_ms`` (None: missed)."""

    fate: Fate
    start_ms: int | None = None
    end_ms: int | None = None
    offset_ms: int = 0  # what of its beginning is skipped: joined late


MISSED = Join("missed")


def join(due_ms: int, duration_ms: int, now_ms: int) -> Join:
    """What becomes of an item due at ``due_ms`` and lasting ``duration_ms`` (all of its
    passes) that can start at ``now_ms`` at the earliest (the loudspeaker is free)."""
    if duration_ms <= 0:
        raise ValueError(f"an item lasts a positive time, not {duration_ms} ms")
    start = max(due_ms, now_ms)
    late = start - due_ms
    if late <= FULL_GRACE_MS:
        return Join("full", start, start + duration_ms)
    if duration_ms - late >= max(JOIN_MIN_MS, duration_ms * JOIN_MIN_SHARE):
        return Join("shortened", start, due_ms + duration_ms, late)
    return MISSED


def call_fate(called_ms: int, now_ms: int, max_age_ms: int = CALL_MAX_AGE_MS) -> str | None:
    """Why a call made at ``called_ms`` (the kiosk's clock) is not said at ``now_ms``, or None:
    say it, however late."""
    if max_age_ms <= 0:
        raise ValueError(f"a call's max age is positive, not {max_age_ms} ms")
    age = now_ms - called_ms
    if age > max_age_ms:
        return CALL_EXPIRED
    if age < -max_age_ms:
        return CALL_CLOCK
    return None
