"""The player's proof of play: the records it sends, from a thread of their own.

Every request ends in exactly one record: ``play.started`` then
``play.finished`` (completed, preempted, stopped, failed), or ``play.missed``
with a reason. The sound device's failures are ``audio.fault``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from broadcast.audio.decode import bytes_to_ms
from broadcast.audio.preemption import Entry

log = logging.getLogger(__name__)

# how a play ended, inside the player, to what the proof of play says
FINISHED_OUTCOMES = {"shutdown": "stopped", "unreadable": "failed", "device": "failed"}
MISSED_REASONS = {"unreadable": "clip_unreadable", "device": "audio_device"}

OnEvent = Callable[[str, dict[str, Any]], None]


def record(entry: Entry) -> dict[str, Any]:
    """What every record of ``entry`` says: which request, and when it was planned."""
    req = entry.req
    planned = req.at_ms if req.at_ms is not None else entry.submitted_ms
    body: dict[str, Any] = {
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
    return body


class ProofOfPlay:
    """Events go out from a thread of their own: a slow receiver cannot stall the audio."""

    def __init__(self, on_event: OnEvent) -> None:
        self._on_event = on_event
        self._events: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._deliver, name="player-events", daemon=True)
        self._thread.start()

    def started(self, entry: Entry, actual_ms: float) -> None:
        self._emit("play.started", {**record(entry), "actual_ms": round(actual_ms)})

    def finished(self, entry: Entry, outcome: str, detail: str) -> None:
        body = {
            **record(entry),
            "actual_ms": None if entry.actual_ms is None else round(entry.actual_ms),
            "outcome": FINISHED_OUTCOMES.get(outcome, outcome),
            "played_ms": round(bytes_to_ms(entry.played_bytes)),
        }
        if detail:
            body["error"] = detail
        self._emit("play.finished", body)

    def missed(self, entry: Entry, reason: str, detail: str = "") -> None:
        body = {**record(entry), "reason": reason}
        if detail:
            body["error"] = detail
        self._emit("play.missed", body)

    def fault(self, key: str, reason: str, detail: str) -> None:
        self._emit("audio.fault", {"reason": reason, "detail": detail, "key": key})

    def close(self) -> None:
        """Deliver what is queued, then stop the thread."""
        self._events.put(None)
        self._thread.join(10)

    def _emit(self, event_type: str, body: dict[str, Any]) -> None:
        self._events.put((event_type, body))

    def _deliver(self) -> None:
        while (item := self._events.get()) is not None:
            try:
                self._on_event(*item)
            except Exception:
                log.exception("on_event failed for %s", item[0])
