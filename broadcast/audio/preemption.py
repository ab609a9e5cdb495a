"""The player's queue entries and its pure decisions over them: what plays next, what cuts in.

The player thread asks these under its lock, between chunks and while it
waits, with the wall clock's time; they read entries and touch no audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broadcast.audio.lateness import join
from broadcast.audio.request import PlayRequest
from broadcast.audio.sources import PcmSource
from broadcast.levels import preempts

PREPARE_MS = 1500.0  # decoding ahead (or connecting a stream) starts this long before
HANDOVER_MS = 150.0  # a timed request of higher priority cuts in this long before its start
# a late request is joined this far ahead of now: time to decode from the offset and
# open the device, so that its first sample goes out when planned and it ends on time
JOIN_LEAD_MS = 500.0


@dataclass(eq=False)
class Entry:
    """A request in the player, with what it has made and played so far."""

    req: PlayRequest
    seq: int  # submission order; a resumed remainder keeps its place
    submitted_ms: float
    source: PcmSource | None = None  # made ahead: a preemptor's, or a preempted remainder
    gain_db: float = 0.0  # what ``source`` was made with
    resumed_from_ms: float = 0.0
    skipped_ms: float = 0.0  # joined late: its source starts this far in (broadcast.audio.lateness)
    stop: str | None = None  # "stopped" or "shutdown", set by other threads
    actual_ms: float | None = None
    played_bytes: int = 0

    @property
    def due_ms(self) -> float | None:
        """When it should start; None as soon as possible (a resumed remainder is never late)."""
        return None if self.resumed_from_ms else self.req.at_ms

    @property
    def position_ms(self) -> float:
        """Where in the request its source starts: joined late, or a resumed remainder."""
        return self.skipped_ms + self.resumed_from_ms


def playable(entry: Entry, now: float) -> bool:
    """Not too late to play, joined at ``now`` plus the lead (broadcast.audio.lateness.join)."""
    due = entry.due_ms
    if due is None:
        return True
    return join(round(due), entry.req.total_ms, round(now + JOIN_LEAD_MS)).start_ms is not None


def due(entry: Entry) -> float:
    """When it asks to start: its ``at_ms``, or when it was submitted."""
    due = entry.due_ms
    return entry.submitted_ms if due is None else due


def gives_way(entry: Entry, queue: Sequence[Entry], now: float, *, latency_ms: float) -> bool:
    """``entry`` is preempted now: something cuts in, or (before its start) should go first."""
    if any(cuts_in(other, entry, now, latency_ms) for other in queue):
        return True
    if entry.actual_ms is None:
        first = best([*queue, entry], now)
        if first is not entry and due(first) <= due(entry):
            return True
    return False


def cuts_in(other: Entry, entry: Entry, now: float, latency_ms: float) -> bool:
    """A higher priority cuts in once due (a timed one just before its start)."""
    if not preempts(other.req.priority, entry.req.priority):
        return False
    due = other.due_ms
    if due is None:
        return True
    # a request too late to play cuts nothing: it will be recorded as missed
    return due - HANDOVER_MS - latency_ms <= now and playable(other, now)


def best(entries: Sequence[Entry], now: float) -> Entry:
    """What should play next: of what is due soon, the highest priority, first due first;
    if nothing is due soon, whatever is due first."""
    soon = [e for e in entries if due(e) <= now + PREPARE_MS]
    if soon:
        return min(soon, key=lambda e: (-e.req.priority, due(e), e.seq))
    return min(entries, key=lambda e: (due(e), -e.req.priority, e.seq))
