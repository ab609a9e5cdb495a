"""The player's proof of play: the records it sends, from a thread of their own.

Every request ends in exactly one record: ``play.started`` then
``play.finished`` (completed, preempted, stopped, failed), or ``play.missed``
with a reason. The sound device's failures are ``audio.fault``. What the
player cannot tell, a play cut off with the agent itself, is told at the next
start from the role's mark (broadcast/play_marks.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import NotRequired, TypedDict

from broadcast.audio.decode import bytes_to_ms
from broadcast.audio.preemption import Entry
from broadcast.audio.request import Origin
from protocol.events import (
    AudioFault,
    Body,
    Outcome,
    PlayFinished,
    PlayMissed,
    PlayStarted,
    RelayGap,
    detail_text,
)

log = logging.getLogger(__name__)

# how a play ended, inside the player, to what the proof of play says
FINISHED_OUTCOMES: dict[str, Outcome] = {
    "completed": "completed",
    "preempted": "preempted",
    "stopped": "stopped",
    "failed": "failed",
    "shutdown": "stopped",
    "unreadable": "failed",
    "device": "failed",
}
MISSED_REASONS = {"unreadable": "clip_unreadable", "device": "audio_device"}

OnEvent = Callable[[Body], None]


class Record(TypedDict):
    """What every play record of a request says (protocol.events.PlayRecord)."""

    key: str
    origin: Origin
    item_id: str | None
    occurrence: str | None
    priority: int
    label: str
    planned_ms: int
    resumed_from_ms: NotRequired[int]
    skipped_ms: NotRequired[int]


def record(entry: Entry) -> Record:
    """What every record of ``entry`` says: which request, and when it was planned."""
    req = entry.req
    planned = req.at_ms if req.at_ms is not None else entry.submitted_ms
    body: Record = {
        "key": req.key,
        "origin": req.origin,
        "item_id": req.item_id,
        "occurrence": req.occurrence,
        "priority": req.priority,
        "label": req.label,
        "planned_ms": round(planned),
    }
    if entry.resumed_from_ms:
        body["resumed_from_ms"] = round(entry.resumed_from_ms)
    if entry.skipped_ms:
        body["skipped_ms"] = round(entry.skipped_ms)
    return body


class ProofOfPlay:
    """Events go out from a thread of their own: a slow receiver cannot stall the audio."""

    def __init__(self, on_event: OnEvent) -> None:
        self._on_event = on_event
        self._events: queue.SimpleQueue[Body | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._deliver, name="player-events", daemon=True)
        self._thread.start()

    def started(self, entry: Entry, actual_ms: float) -> None:
        self._emit(PlayStarted(**record(entry), actual_ms=round(actual_ms)))

    def finished(
        self,
        entry: Entry,
        outcome: str,
        detail: str,
        *,
        resumes: bool = False,
        relayed: tuple[float, list[RelayGap]] | None = None,
    ) -> None:
        """``relayed``: a stream's own airtime and its gaps (broadcast.audio.relay)."""
        body = PlayFinished(
            **record(entry),
            actual_ms=None if entry.actual_ms is None else round(entry.actual_ms),
            outcome=FINISHED_OUTCOMES.get(outcome, "failed"),
            played_ms=round(bytes_to_ms(entry.played_bytes)),
        )
        if detail:
            body.error = detail_text(detail)
        if resumes:
            body.resumes = True
        if relayed is not None:
            body.relayed_ms = round(relayed[0])
            body.gaps = list(relayed[1])
        self._emit(body)

    def missed(self, entry: Entry, reason: str, detail: str = "") -> None:
        body = PlayMissed(**record(entry), reason=reason)
        if detail:
            body.error = detail_text(detail)
        self._emit(body)

    def fault(self, key: str, reason: str, detail: str) -> None:
        self._emit(AudioFault(reason=reason, detail=detail_text(detail), key=key))

    def close(self) -> None:
        """Deliver what is queued, then stop the thread."""
        self._events.put(None)
        self._thread.join(10)

    def _emit(self, body: Body) -> None:
        self._events.put(body)

    def _deliver(self) -> None:
        while (body := self._events.get()) is not None:
            try:
                self._on_event(body)
            except Exception:
                log.exception("on_event failed for %s", body.TYPE)
