"""The device's one player: requests by priority, timed starts, preemption, proof of play.

One thread plays one request at a time into the sink, in chunks of
``chunk_ms``, and looks between chunks for a reason to stop: a higher priority
that is due (it cuts in within a chunk or two), ``stop()``, ``close()``. An
equal priority queues behind (first come, first played; higher priorities
first). A timed request is prepared ahead (amplifier on, audio decoded, sink
open) and its first sample handed over at ``at_ms``: the thread sleeps until a
few milliseconds before, then spins on the wall clock.

Every request ends in exactly one record for the proof of play:
``play.started`` then ``play.finished`` (completed, preempted, stopped,
failed), or ``play.missed`` with a reason. A failure never stops the thread.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from broadcast.audio.amplifier import Amplifier
from broadcast.audio.decode import (
    CHANNELS,
    RATE,
    ClipSource,
    DecodeError,
    DecoderPool,
    PcmSource,
    StreamRelay,
    bytes_to_ms,
    volume_db,
)
from broadcast.audio.request import Origin, PlayRequest
from broadcast.audio.sinks import Sink, SinkError, wall_ms
from broadcast.levels import preempts
from protocol.events import (
    AudioFault,
    Body,
    Outcome,
    PlayFinished,
    PlayMissed,
    PlayStarted,
    detail_text,
)

log = logging.getLogger(__name__)

SPIN_MS = 3.0  # the last stretch before a timed start is spun, not slept
MAX_WAIT_S = 0.05  # waits re-read the wall clock this often, so a clock step is noticed
PREPARE_MS = 1500.0  # decoding ahead (or connecting a stream) starts this long before
SETTLE_MS = 100.0  # decoding ahead stops this long before the start: time to open the sink
HANDOVER_MS = 150.0  # a timed request of higher priority cuts in this long before its start
AMP_NEED_MS = 1000.0  # while playing, the amplifier is told audio runs at least this far
SINK_ATTEMPTS = 3
SINK_RETRY_MS = 500.0

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


class _Record(TypedDict):
    """What every play record of a request says (protocol.events.PlayRecord)."""

    key: str
    origin: Origin
    item_id: str | None
    occurrence: str | None
    priority: int
    label: str
    planned_ms: int
    resumed_from_ms: NotRequired[int]


@dataclass(eq=False)
class _Entry:
    req: PlayRequest
    seq: int  # submission order; a resumed remainder keeps its place
    submitted_ms: float
    source: PcmSource | None = None  # made ahead: a preemptor's, or a preempted remainder
    gain_db: float = 0.0  # what ``source`` was made with
    resumed_from_ms: float = 0.0
    stop: str | None = None  # "stopped" or "shutdown", set by other threads
    actual_ms: float | None = None
    played_bytes: int = 0

    @property
    def due_ms(self) -> float | None:
        """When it should start; None as soon as possible (a resumed remainder is never late)."""
        return None if self.resumed_from_ms else self.req.at_ms


def _due(entry: _Entry) -> float:
    """When it asks to start: its ``at_ms``, or when it was submitted."""
    due = entry.due_ms
    return entry.submitted_ms if due is None else due


class Player:
    def __init__(
        self,
        sink: Sink,
        *,
        amplifier: Amplifier | None = None,
        on_event: OnEvent,
        now_ms: Callable[[], float] = wall_ms,
        resume_preempted: bool = False,
        volume_pct: int = 100,
        late_grace_ms: float = 2000,
        chunk_ms: float = 20,
        ahead_ms: float = 1000,
        decoders: DecoderPool | None = None,
    ) -> None:
        volume_db(volume_pct)  # refuses a bad value now, not in the thread
        self.sink = sink
        self.amp = amplifier
        self._on_event = on_event
        self._now = now_ms
        self.resume_preempted = resume_preempted
        self._volume_pct = volume_pct
        self.late_grace_ms = late_grace_ms
        self.chunk_ms = chunk_ms
        self.ahead_ms = ahead_ms
        self._pool = decoders or DecoderPool()
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []
        self._current: _Entry | None = None
        self._seq = itertools.count()
        self._closed = False
        self._sink_open = False
        self._events: queue.SimpleQueue[Body | None] = queue.SimpleQueue()
        self._emitter = threading.Thread(target=self._deliver, name="player-events", daemon=True)
        self._emitter.start()
        self._thread = threading.Thread(target=self._run, name="player", daemon=True)
        self._thread.start()

    # the API, for any thread

    def submit(self, req: PlayRequest) -> None:
        entry = _Entry(req, next(self._seq), self._now())
        with self._cond:
            closed, current = self._closed, self._current
        if closed:
            self._missed(entry, "shutdown")
            return
        cuts_in = current is not None and preempts(req.priority, current.req.priority)
        if cuts_in and req.at_ms is None:
            try:
                self._prepare_source(entry)  # decode while the current chunk plays out
            except DecodeError as exc:
                log.warning("could not decode %s ahead (%s); again when it plays", req.key, exc)
        with self._cond:
            closed = self._closed
            if not closed:
                self._queue.append(entry)
                self._cond.notify_all()
        if closed:
            self._drop(entry, "shutdown")

    def stop(self, priority_max: int) -> int:
        """Stop what plays at or below ``priority_max`` and drop such queued requests."""
        with self._cond:
            dropped = [e for e in self._queue if e.req.priority <= priority_max]
            self._queue = [e for e in self._queue if e.req.priority > priority_max]
            current = self._current
            stopping = current is not None and current.req.priority <= priority_max
            if current is not None and stopping:
                current.stop = "stopped"
            self._cond.notify_all()
        for entry in dropped:
            self._drop(entry, "stopped")
        return len(dropped) + int(stopping)

    def set_volume(self, pct: int) -> None:
        """Takes effect within a chunk: the decoder restarts where it was, at the new gain."""
        volume_db(pct)
        self._volume_pct = pct

    @property
    def volume_pct(self) -> int:
        return self._volume_pct

    def now_playing(self) -> dict[str, Any] | None:
        with self._cond:
            entry = self._current
            if entry is None or entry.actual_ms is None:
                return None
            return {
                **self._record(entry),
                "actual_ms": round(entry.actual_ms),
                "played_ms": round(entry.resumed_from_ms + bytes_to_ms(entry.played_bytes)),
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            dropped, self._queue = self._queue, []
            if self._current is not None:
                self._current.stop = "shutdown"
            self._cond.notify_all()
        for entry in dropped:
            self._drop(entry, "shutdown")
        self._thread.join(10)
        self._events.put(None)
        self._emitter.join(10)
        self._pool.close()

    # the player thread

    def _run(self) -> None:
        while (entry := self._take()) is not None:
            try:
                self._play(entry)
            except Exception as exc:  # a bug must not silence the device
                log.exception("player failed on %s", entry.req.key)
                self._close_sink(entry, drain=False)
                self._discard(entry)
                if entry.actual_ms is None:
                    self._missed(entry, "player_error", repr(exc))
                else:
                    self._end(entry, "failed", f"player error: {exc!r}")
            finally:
                with self._cond:
                    self._current = None

    def _take(self) -> _Entry | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            entry = self._best_locked(None, self._now())
            self._queue.remove(entry)
            self._current = entry
            return entry

    def _play(self, entry: _Entry) -> None:
        due = entry.due_ms
        now = self._now()
        if due is not None and now - due > self.late_grace_ms:
            self._missed(entry, "late", f"{round(now - due)} ms after the planned start")
            return
        start = now if due is None else due
        if self.amp is not None:
            start = self.amp.on_at(start)  # when the amplifier is off, its pre-roll comes first
        why = self._wait(entry, start - PREPARE_MS)
        if why is None:
            try:
                why = self._prefetch(entry, self._prepare_source(entry), start)
            except DecodeError as exc:
                self._discard(entry)
                self._missed(entry, "clip_unreadable", str(exc))
                return
        if why is None:
            self._open_sink(entry)
            why = self._wait(entry, start - self.sink.latency_ms, spin=True)
        if why is not None:  # interrupted before the first sample
            self._close_sink(entry, drain=False)
            if why == "preempted":
                self._requeue(entry)
            else:
                self._discard(entry)
                self._missed(entry, why)
            return
        outcome, detail = self._stream(entry)
        self._finish(entry, outcome, detail)

    def _stream(self, entry: _Entry) -> tuple[str, str]:
        """The chunk loop: returns how it ended (an outcome, or "unreadable"/"device") and why."""
        assert entry.source is not None
        told_amp = 0.0
        while True:
            why = self._interruption(entry)
            if why is not None:
                return why, ""
            gain = self._gain(entry.req)
            try:
                if gain != entry.gain_db:
                    self._regain(entry, gain)
                chunk = entry.source.read(self.chunk_ms / 1000)
            except DecodeError as exc:
                return "unreadable", str(exc)
            if chunk is None:
                return "completed", ""
            if not chunk:
                continue
            written_at = self._write(entry, chunk)
            if written_at is None:
                return self._interruption(entry) or "device", "the audio device failed"
            entry.played_bytes += len(chunk)
            if entry.actual_ms is None:
                with self._cond:
                    entry.actual_ms = written_at
                self._emit(PlayStarted(**self._record(entry), actual_ms=round(written_at)))
            if self.amp is not None and written_at - told_amp > AMP_NEED_MS / 2:
                told_amp = written_at
                self.amp.need(written_at + AMP_NEED_MS)

    def _finish(self, entry: _Entry, outcome: str, detail: str) -> None:
        source = entry.source
        assert source is not None
        if entry.actual_ms is None:  # nothing was played
            self._close_sink(entry, drain=False)
            if outcome == "preempted":
                self._requeue(entry)
                return
            self._discard(entry)
            if outcome == "completed":
                outcome, detail = "unreadable", "no audio in the clip"
            self._missed(entry, MISSED_REASONS.get(outcome, outcome), detail)
            return
        if not self._close_sink(entry, drain=outcome == "completed") and outcome == "completed":
            outcome, detail = "device", "the audio device failed at the end"
        if self.amp is not None:
            self.amp.need(self._now() + self.sink.latency_ms)
        rest = None
        if outcome == "preempted" and self.resume_preempted:
            rest = source.remainder(entry.gain_db)
        source.close()
        entry.source = None
        self._end(entry, outcome, detail)
        if rest is not None:
            played = entry.resumed_from_ms + bytes_to_ms(entry.played_bytes)
            resumed = _Entry(entry.req, entry.seq, entry.submitted_ms, rest, entry.gain_db, played)
            with self._cond:
                self._queue.append(resumed)

    def _end(self, entry: _Entry, outcome: str, detail: str) -> None:
        body = PlayFinished(
            **self._record(entry),
            actual_ms=None if entry.actual_ms is None else round(entry.actual_ms),
            outcome=FINISHED_OUTCOMES.get(outcome, "failed"),
            played_ms=round(bytes_to_ms(entry.played_bytes)),
        )
        if detail:
            body.error = detail_text(detail)
        self._emit(body)

    # waiting and preemption

    def _interruption(self, entry: _Entry) -> str | None:
        with self._cond:
            return self._interruption_locked(entry)

    def _interruption_locked(self, entry: _Entry) -> str | None:
        """Why ``entry`` must stop now: stopped, or preempted (before its start: give way)."""
        if entry.stop is not None:
            return entry.stop
        now = self._now()
        if any(self._cuts_in(other, entry, now) for other in self._queue):
            return "preempted"
        if entry.actual_ms is None:
            best = self._best_locked(entry, now)
            if best is not entry and _due(best) <= _due(entry):
                return "preempted"
        return None

    def _cuts_in(self, other: _Entry, entry: _Entry, now: float) -> bool:
        """A higher priority cuts in once due (a timed one just before its start)."""
        if not preempts(other.req.priority, entry.req.priority):
            return False
        due = other.due_ms
        if due is None:
            return True
        # a request too late to play cuts nothing: it will be recorded as missed
        return due - HANDOVER_MS - self.sink.latency_ms <= now <= due + self.late_grace_ms

    def _best_locked(self, current: _Entry | None, now: float) -> _Entry:
        """What should play next: of what is due soon, the highest priority, first due first;
        if nothing is due soon, whatever is due first."""
        entries = self._queue if current is None else [*self._queue, current]
        soon = [e for e in entries if _due(e) <= now + PREPARE_MS]
        if soon:
            return min(soon, key=lambda e: (-e.req.priority, _due(e), e.seq))
        return min(entries, key=lambda e: (_due(e), -e.req.priority, e.seq))

    def _wait(self, entry: _Entry, until_ms: float, *, spin: bool = False) -> str | None:
        """Wait until ``until_ms`` on the wall clock; returns why if interrupted first."""
        early = SPIN_MS if spin else 0.0
        with self._cond:
            while True:
                why = self._interruption_locked(entry)
                if why is not None:
                    return why
                left = until_ms - self._now()
                if left <= early:
                    break
                self._cond.wait(min(MAX_WAIT_S, (left - early) / 1000))
        while spin and self._now() < until_ms:
            pass
        return None

    def _prefetch(self, entry: _Entry, source: PcmSource, start_ms: float) -> str | None:
        """Decode ahead (or connect a stream) until just before the start."""
        while (why := self._interruption(entry)) is None:
            left_s = (start_ms - SETTLE_MS - self._now()) / 1000
            if left_s <= 0 or source.prefetch(self.ahead_ms, min(left_s, MAX_WAIT_S)):
                return None
        return why

    def _requeue(self, entry: _Entry) -> None:
        """Back in the queue, untouched: it was cut before its first sample."""
        self._discard(entry)
        with self._cond:
            self._queue.append(entry)

    # sources and gain

    def _gain(self, req: PlayRequest) -> float:
        return req.gain_db + volume_db(self._volume_pct)

    def _prepare_source(self, entry: _Entry) -> PcmSource:
        """The entry's source, made (or remade at the current gain) and started."""
        gain = self._gain(entry.req)
        if entry.source is not None and entry.gain_db != gain:
            self._regain(entry, gain)
        if entry.source is None:
            entry.source = self._new_source(entry.req, gain)
            entry.gain_db = gain
        entry.source.start()
        return entry.source

    def _new_source(self, req: PlayRequest, gain_db: float) -> PcmSource:
        if req.clip_path is not None:
            return ClipSource(
                req.clip_path,
                self._pool,
                gain_db=gain_db,
                repeat=req.repeat,
                chunk_ms=self.chunk_ms,
            )
        assert req.stream_url is not None

        def fault(reason: str, detail: str) -> None:
            self._emit(AudioFault(reason=reason, detail=detail_text(detail), key=req.key))

        return StreamRelay(
            req.stream_url,
            req.duration_ms,
            gain_db=gain_db,
            on_fault=fault,
            chunk_ms=self.chunk_ms,
            jitter_ms=self.ahead_ms,
        )

    def _regain(self, entry: _Entry, gain_db: float) -> None:
        """Restart the source where it is, at a new gain (ffmpeg applies it)."""
        assert entry.source is not None
        old, entry.source = entry.source, entry.source.remainder(gain_db)
        old.close()
        entry.gain_db = gain_db
        entry.source.start()

    def _discard(self, entry: _Entry) -> None:
        if entry.source is not None:
            entry.source.close()
            entry.source = None

    # the sink

    def _open_sink(self, entry: _Entry) -> None:
        """Open ahead of the start; a failure is reported and tried again at the first write."""
        if self._sink_open:
            return
        try:
            self.sink.open(RATE, CHANNELS, key=entry.req.key, label=entry.req.label)
            self._sink_open = True
        except SinkError as exc:
            self._fault(entry, exc)

    def _write(self, entry: _Entry, chunk: bytes) -> float | None:
        """Hand a chunk to the sink, reopening it on a failure; the time it went, or None."""
        for attempt in range(SINK_ATTEMPTS):
            try:
                if not self._sink_open:
                    self.sink.open(RATE, CHANNELS, key=entry.req.key, label=entry.req.label)
                    self._sink_open = True
                at = self._now()
                self.sink.write(chunk)
                return at
            except SinkError as exc:
                self._fault(entry, exc)
                self._close_sink(entry, drain=False)
            last = attempt + 1 == SINK_ATTEMPTS
            if last or self._wait(entry, self._now() + SINK_RETRY_MS * (attempt + 1)):
                return None
        return None

    def _close_sink(self, entry: _Entry, *, drain: bool) -> bool:
        if not self._sink_open:
            return True
        self._sink_open = False
        try:
            self.sink.close(drain=drain)
        except SinkError as exc:
            self._fault(entry, exc)
            return False
        return True

    # events

    def _record(self, entry: _Entry) -> _Record:
        req = entry.req
        planned = req.at_ms if req.at_ms is not None else entry.submitted_ms
        body: _Record = {
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

    def _missed(self, entry: _Entry, reason: str, detail: str = "") -> None:
        body = PlayMissed(**self._record(entry), reason=reason)
        if detail:
            body.error = detail_text(detail)
        self._emit(body)

    def _drop(self, entry: _Entry, reason: str) -> None:
        self._discard(entry)
        self._missed(entry, reason)

    def _fault(self, entry: _Entry, exc: SinkError) -> None:
        log.warning("audio device: %s", exc)
        self._emit(AudioFault(reason=exc.reason, detail=detail_text(exc.detail), key=entry.req.key))

    def _emit(self, body: Body) -> None:
        """Events go out from a thread of their own: a slow receiver cannot stall the audio."""
        self._events.put(body)

    def _deliver(self) -> None:
        while (body := self._events.get()) is not None:
            try:
                self._on_event(body)
            except Exception:
                log.exception("on_event failed for %s", body.TYPE)
