"""Spoken calls on the hall speaker, off the officer's request thread.

Making a call's clip (espeak-ng, pydub, ffmpeg) takes a second or two the
first time; a recall of the same number reuses it (kiosk.voice.build_call).
So a counter's "call next" only queues the call here and answers at once; one
thread builds each clip and submits it to the broadcast player with origin
``call``, whose proof of play (``play.started``/``play.finished``) goes out
like any other play.

A call is said late rather than never: behind a bulletin or other calls it
waits its turn. It is not said, and is reported as ``play.missed``, when it
is too old (broadcast.audio.lateness.call_fate: older than ``max_age_ms``, by the
time it was made, before its turn came) or when the ticket moved on before
it was said (``superseded``): called again (the newer call is said), or
served, skipped or transferred (``moved_on``, from the kiosk on the same
device).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broadcast.audio.clips import ClipError, ClipSettings
from broadcast.audio.lateness import CALL_MAX_AGE_MS, CALL_SUPERSEDED, call_fate
from broadcast.audio.player import Player
from broadcast.audio.tts import SpeechEngine
from kiosk.voice import build_call, call_key, call_label, call_request
from protocol.events import Body, PlayMissed, detail_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    number: str
    counter: int
    ticket_id: str
    called_ms: int  # when the counter called, on the kiosk's clock (its event's ``ts``)


class Caller:
    def __init__(
        self,
        player: Player,
        engine: SpeechEngine,
        clip_dir: Path,
        *,
        now_ms: Callable[[], int],
        on_event: Callable[[Body], object],
        settings: ClipSettings | None = None,
        priority: int = 4,
        repeats: int = 2,
        max_age_ms: int = CALL_MAX_AGE_MS,
    ) -> None:
        call_fate(0, 0, max_age_ms)  # refuses a bad max age now, not in the thread
        self.player = player
        self._engine = engine
        self._dir = clip_dir
        self._now = now_ms
        self._emit = on_event
        self._settings = settings or ClipSettings()
        self._priority = priority
        self._repeats = repeats
        self._max_age_ms = max_age_ms
        self._lock = threading.Lock()
        # ticket id -> a call made before this is superseded (the newest call's time, or
        # just after the ticket moved on); and the key of its call given to the player
        self._newest: dict[str, int] = {}
        self._submitted: dict[str, str] = {}
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="caller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, call: Call) -> str | None:
        """Queue "Xin mời số <number> đến quầy số <counter>", said after a chime; or the
        reason it will not be said (reported as ``play.missed``): too old, or a clock ahead."""
        why = call_fate(call.called_ms, self._now(), self._max_age_ms)
        if why is not None:
            self._missed(call, why)
            return why
        with self._lock:
            self._prune()
            self._newest[call.ticket_id] = max(self._newest.get(call.ticket_id, 0), call.called_ms)
        self._calls.put(call)
        return None

    def moved_on(self, ticket_id: str) -> None:
        """The ticket was served, skipped or transferred: a call of it not yet said is not."""
        with self._lock:
            self._newest[ticket_id] = max(self._newest.get(ticket_id, 0), self._now() + 1)
            key = self._submitted.pop(ticket_id, None)
        if key is not None:
            self.player.cancel(key, CALL_SUPERSEDED)

    def close(self) -> None:
        self._calls.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # the caller thread

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                self._make(call)
            except (ClipError, ValueError, OSError) as exc:
                log.error("call of %s to counter %d not made: %s", call.number, call.counter, exc)

    def _make(self, call: Call) -> None:
        if self._superseded(call):
            return
        clip = build_call(
            call.number,
            call.counter,
            self._engine,
            self._dir,
            self._settings,
            repeats=self._repeats,
        )
        why = call_fate(call.called_ms, self._now(), self._max_age_ms)
        if why is not None:  # grew too old while clips were made
            self._missed(call, why)
            return
        # relative: the player's clock is not the kiosk's
        left = call.called_ms + self._max_age_ms - self._now()
        req = call_request(
            call.number,
            call.counter,
            clip,
            call.called_ms,
            priority=self._priority,
            max_wait_ms=left,
        )
        with self._lock:  # held to the submit: a ticket moving on meanwhile cancels this one
            superseded = self._superseded_locked(call)
            if not superseded:
                previous = self._submitted.get(call.ticket_id)
                self._submitted[call.ticket_id] = req.key
                if previous is not None:
                    self.player.cancel(previous, CALL_SUPERSEDED)  # an older call still waiting
                self.player.submit(req)
        if superseded:
            self._missed(call, CALL_SUPERSEDED)  # moved on while its clip was made

    def _superseded(self, call: Call) -> bool:
        with self._lock:
            gone = self._superseded_locked(call)
        if gone:
            self._missed(call, CALL_SUPERSEDED)
        return gone

    def _superseded_locked(self, call: Call) -> bool:
        return call.called_ms < self._newest.get(call.ticket_id, 0)

    def _prune(self) -> None:
        """Forget tickets whose calls are all too old to be said anyway."""
        horizon = self._now() - 2 * self._max_age_ms
        for ticket in [t for t, at in self._newest.items() if at < horizon]:
            del self._newest[ticket]
            self._submitted.pop(ticket, None)

    def _missed(self, call: Call, reason: str) -> None:
        age_s = (self._now() - call.called_ms) / 1000
        detail = f"called {age_s:.0f} s ago; calls are said until {self._max_age_ms // 1000} s"
        if reason == CALL_SUPERSEDED:
            detail = "the ticket was called again, served or moved before this call was said"
        self._emit(
            PlayMissed(
                key=call_key(call.number, call.counter, call.called_ms),
                origin="call",
                priority=self._priority,
                label=call_label(call.number, call.counter),
                planned_ms=call.called_ms,
                reason=reason,
                error=detail_text(detail),
            )
        )
