"""The device's one player: requests by priority, timed starts, preemption, proof of play.

One thread plays one request at a time into the sink, in chunks of
``chunk_ms``, and looks between chunks for a reason to stop: a higher priority
that is due (it cuts in within a chunk or two), ``stop()``, ``close()``. An
equal priority queues behind (first come, first played; higher priorities
first). A timed request is prepared ahead (amplifier on, audio decoded, sink
open) and its first sample handed over at ``at_ms``: the thread sleeps until a
few milliseconds before, then spins on the wall clock. One that cannot start
on time (it waited behind another) plays as broadcast.audio.lateness says: in full,
joined in progress so it ends at its planned end, or missed as ``late``.

Every request ends in exactly one record for the proof of play:
``play.started`` then ``play.finished`` (completed, preempted, stopped,
failed), or ``play.missed`` with a reason. A preempted play resumes where it
was cut once what cut in has ended (``resume_preempted``, on by default): its
record says ``resumes``, and the rest is a play of its own, from
``resumed_from_ms``. A failure never stops the thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from broadcast.audio.amplifier import Amplifier
from broadcast.audio.decode import CHANNELS, RATE, DecodeError, DecoderPool, bytes_to_ms, volume_db
from broadcast.audio.lateness import CALL_EXPIRED, MISSED_LATE, join
from broadcast.audio.preemption import JOIN_LEAD_MS, PREPARE_MS, Entry, best, gives_way
from broadcast.audio.proof_of_play import MISSED_REASONS, OnEvent, ProofOfPlay, record
from broadcast.audio.relay import RelayPolicy, StreamRelay
from broadcast.audio.request import PlayRequest
from broadcast.audio.sink_clock import SinkClock
from broadcast.audio.sinks import Sink, SinkError, wall_ms
from broadcast.audio.sources import ClipSource, PcmSource
from broadcast.levels import preempts

log = logging.getLogger(__name__)

SPIN_MS = 3.0  # the last stretch before a timed start is spun, not slept
MAX_WAIT_S = 0.05  # waits re-read the wall clock this often, so a clock step is noticed
SETTLE_MS = 100.0  # decoding ahead stops this long before the start: time to open the sink
AMP_NEED_MS = 1000.0  # while playing, the amplifier is told audio runs at least this far
SINK_ATTEMPTS = 3
SINK_RETRY_MS = 500.0
STREAM_UNREACHABLE = "stream_unreachable"  # no audio came in all of a relay's time


class Player:
    def __init__(
        self,
        sink: Sink,
        *,
        amplifier: Amplifier | None = None,
        on_event: OnEvent,
        now_ms: Callable[[], float] = wall_ms,
        resume_preempted: bool = True,
        volume_pct: int = 100,
        chunk_ms: float = 20,
        ahead_ms: float = 1000,
        decoders: DecoderPool | None = None,
        relay: RelayPolicy | None = None,
        drift_window_s: float = 20.0,  # a card's drift is measured over this long
    ) -> None:
        volume_db(volume_pct)  # refuses a bad value now, not in the thread
        self.sink = sink
        self.amp = amplifier
        self._proof = ProofOfPlay(on_event)
        self._now = now_ms
        self.resume_preempted = resume_preempted
        self._volume_pct = volume_pct
        self.chunk_ms = chunk_ms
        self.ahead_ms = ahead_ms
        self._pool = decoders or DecoderPool()
        self.relay = relay or RelayPolicy()
        self.drift_window_s = drift_window_s
        self._cond = threading.Condition()
        self._queue: list[Entry] = []
        self._current: Entry | None = None
        self._seq = itertools.count()
        self._closed = False
        self._sink_open = False
        self._thread = threading.Thread(target=self._run, name="player", daemon=True)
        self._thread.start()

    # the API, for any thread

    def submit(self, req: PlayRequest) -> None:
        entry = Entry(req, next(self._seq), self._now())
        with self._cond:
            closed, current = self._closed, self._current
        if closed:
            self._proof.missed(entry, "shutdown")
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

    def cancel(self, key: str, reason: str) -> bool:
        """Drop the queued requests of ``key``, reported missed with ``reason``; one already
        taken plays on. Whether any was dropped."""
        with self._cond:
            dropped = [e for e in self._queue if e.req.key == key]
            self._queue = [e for e in self._queue if e.req.key != key]
        for entry in dropped:
            self._drop(entry, reason)
        return bool(dropped)

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
                **record(entry),
                "actual_ms": round(entry.actual_ms),
                "played_ms": round(entry.position_ms + bytes_to_ms(entry.played_bytes)),
            }

    def decoders_taken(self) -> dict[str, int]:
        """Decoders handed out so far: warm (started ahead) or cold (on demand)."""
        return dict(self._pool.taken)

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
        self._proof.close()
        self._pool.close()

    # the player thread

    def _run(self) -> None:
        self._warm_spares()  # now, not at the first play: a cold ffmpeg makes it late
        while (entry := self._take()) is not None:
            try:
                self._warm_spares()  # let go while idle: back before this one is due
                self._play(entry)
            except Exception as exc:  # a bug must not silence the device
                log.exception("player failed on %s", entry.req.key)
                self._close_sink(entry, drain=False)
                self._discard(entry)
                if entry.actual_ms is None:
                    self._proof.missed(entry, "player_error", repr(exc))
                else:
                    self._proof.finished(entry, "failed", f"player error: {exc!r}")
            finally:
                with self._cond:
                    self._current = None

    def _warm_spares(self) -> None:
        try:
            self._pool.warm()
        except DecodeError as exc:
            log.warning("could not start a decoder ahead: %s", exc)

    def _take(self) -> Entry | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait(self._pool.release_idle())  # None: until something comes
            if self._closed:
                return None
            entry = best(self._queue, self._now())
            self._queue.remove(entry)
            self._current = entry
            return entry

    def _play(self, entry: Entry) -> None:
        now = self._now()
        max_wait = entry.req.max_wait_ms
        if max_wait is not None and now - entry.submitted_ms > max_wait:
            waited = round(now - entry.submitted_ms)
            self._drop(entry, CALL_EXPIRED, f"waited {waited} ms; {max_wait} ms at most")
            return
        # a stream switches the amplifier on only once its audio flows (_connect)
        stream = entry.req.stream_url is not None
        start = self._start_of(entry, now, amp=None if stream else self.amp)
        if start is None:
            late = round(now - (entry.due_ms or now))
            self._drop(entry, MISSED_LATE, f"{late} ms after the planned start")
            return
        lead = PREPARE_MS + (self.amp.preroll_ms if stream and self.amp is not None else 0)
        why = self._wait(entry, start - lead)
        if why is None:
            try:
                source = self._prepare_source(entry)
                if isinstance(source, StreamRelay):
                    why, start = self._connect(entry, source, start)
                else:
                    why = self._prefetch(entry, source, start)
            except DecodeError as exc:
                self._discard(entry)
                self._proof.missed(entry, "clip_unreadable", str(exc))
                return
        if why is None:
            self._open_sink(entry)
            why = self._wait(entry, start - self.sink.latency_ms, spin=True)
        if why is not None:  # interrupted before the first sample
            self._close_sink(entry, drain=False)
            if why == "preempted":
                self._requeue(entry)
            else:
                error = entry.source.last_error if isinstance(entry.source, StreamRelay) else ""
                self._discard(entry)
                self._proof.missed(entry, why, error)
            return
        outcome, detail = self._stream(entry)
        self._finish(entry, outcome, detail)

    def _start_of(self, entry: Entry, now: float, amp: Amplifier | None) -> float | None:
        """When the first sample goes out, the part joined late set; None: too late to play."""
        due, total = entry.due_ms, entry.req.total_ms
        if due is None:
            return now if amp is None else amp.on_at(now)
        entry.skipped_ms = 0
        earliest = now + JOIN_LEAD_MS
        if join(round(due), total, round(earliest)).start_ms is None:
            return None  # asked first, so the amplifier is not switched on for nothing
        start = due if amp is None else amp.on_at(due)  # its pre-roll comes first
        joined = join(round(due), total, round(max(start, earliest)))
        if joined.start_ms is None:
            return None
        if not joined.offset_ms:
            return start
        self._discard(entry)  # a source made ahead would start at the beginning
        entry.skipped_ms = joined.offset_ms
        return joined.start_ms

    def _stream(self, entry: Entry) -> tuple[str, str]:
        """The chunk loop: returns how it ended (an outcome, or "unreadable"/"device") and why."""
        assert entry.source is not None
        told_amp = 0.0
        # a card's drift is measured, so that a stream keeps to the wall clock's timeline
        card = SinkClock(window_s=self.drift_window_s) if self.sink.card_clock else None
        while True:
            why = self._interruption(entry)
            if why is not None:
                return why, ""
            gain = self._gain(entry.req)
            try:
                if gain != entry.gain_db:
                    self._regain(entry, gain)
                if isinstance(entry.source, StreamRelay):
                    drift = card.drift_ms() if card is not None else 0.0
                    entry.source.align(self._heard_at(entry) + drift)
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
            returned = self._now()
            entry.played_bytes += len(chunk)
            if entry.actual_ms is None:
                with self._cond:
                    entry.actual_ms = written_at
                self._proof.started(entry, written_at)
            if card is not None:
                card.wrote(returned, entry.actual_ms + bytes_to_ms(entry.played_bytes))
            if self.amp is not None and written_at - told_amp > AMP_NEED_MS / 2:
                told_amp = written_at
                self.amp.need(written_at + AMP_NEED_MS)

    def _heard_at(self, entry: Entry) -> float:
        """When the next sample written is heard: on the sink's nominal timeline (its first
        write and the samples since) once it has begun; a card's drift is added to it."""
        if entry.actual_ms is None:
            return self._now() + self.sink.latency_ms
        return entry.actual_ms + bytes_to_ms(entry.played_bytes) + self.sink.latency_ms

    def _finish(self, entry: Entry, outcome: str, detail: str) -> None:
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
            self._proof.missed(entry, MISSED_REASONS.get(outcome, outcome), detail)
            return
        if not self._close_sink(entry, drain=outcome == "completed") and outcome == "completed":
            outcome, detail = "device", "the audio device failed at the end"
        if self.amp is not None:
            self.amp.need(self._now() + self.sink.latency_ms)
        relayed = source.proof() if isinstance(source, StreamRelay) else None
        rest = None
        if outcome == "preempted" and self.resume_preempted:
            rest = source.remainder(entry.gain_db)
        source.close()
        entry.source = None
        self._proof.finished(entry, outcome, detail, resumes=rest is not None, relayed=relayed)
        if rest is not None:
            played = entry.position_ms + bytes_to_ms(entry.played_bytes)
            resumed = Entry(entry.req, entry.seq, entry.submitted_ms, rest, entry.gain_db, played)
            with self._cond:
                self._queue.append(resumed)

    # waiting and preemption

    def _interruption(self, entry: Entry) -> str | None:
        with self._cond:
            return self._interruption_locked(entry)

    def _interruption_locked(self, entry: Entry) -> str | None:
        """Why ``entry`` must stop now: stopped, or preempted (before its start: give way)."""
        if entry.stop is not None:
            return entry.stop
        if gives_way(entry, self._queue, self._now(), latency_ms=self.sink.latency_ms):
            return "preempted"
        return None

    def _wait(self, entry: Entry, until_ms: float, *, spin: bool = False) -> str | None:
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

    def _prefetch(self, entry: Entry, source: PcmSource, start_ms: float) -> str | None:
        """Decode ahead (or connect a stream) until just before the start."""
        while (why := self._interruption(entry)) is None:
            left_s = (start_ms - SETTLE_MS - self._now()) / 1000
            if left_s <= 0 or source.prefetch(self.ahead_ms, min(left_s, MAX_WAIT_S)):
                return None
        return why

    def _connect(self, entry: Entry, relay: StreamRelay, start: float) -> tuple[str | None, float]:
        """Connect (and again, as the relay's backoff says) until the stream's audio flows, for
        as long as its time lasts; only then is the amplifier told. Returns why it will not
        play (interrupted, or unreachable) and when its first sample goes out: a start that
        waited for the stream shortens the relay, which still ends when it should."""
        end = start + bytes_to_ms(relay.remaining_bytes)
        # refused or cut for dead_air_s (a slow first connection is not): its fallback airs
        fall_back_at = start + relay.policy.dead_air_s * 1000
        while (why := self._interruption(entry)) is None:
            if relay.prefetch(self.ahead_ms, MAX_WAIT_S):
                break
            if relay.has_fallback and relay.last_error and self._now() >= fall_back_at:
                relay.open_unreachable()  # on air with the fallback, still reconnecting
                break
            if self._now() >= end - JOIN_LEAD_MS:
                return STREAM_UNREACHABLE, start
        if why is not None:
            return why, start
        begin = max(start, self._now() + SETTLE_MS)  # time to open the sink
        if self.amp is not None:
            begin = self.amp.on_at(begin)
        if begin > start:
            relay.shorten(begin - start)
            entry.skipped_ms += begin - start
        return None, begin

    def _requeue(self, entry: Entry) -> None:
        """Back in the queue, untouched: it was cut before its first sample."""
        self._discard(entry)
        with self._cond:
            self._queue.append(entry)

    # sources and gain

    def _gain(self, req: PlayRequest) -> float:
        return req.gain_db + volume_db(self._volume_pct)

    def _prepare_source(self, entry: Entry) -> PcmSource:
        """The entry's source, made (or remade at the current gain) and started."""
        gain = self._gain(entry.req)
        if entry.source is not None and entry.gain_db != gain:
            self._regain(entry, gain)
        if entry.source is None:
            entry.source = self._new_source(entry.req, gain, entry.skipped_ms)
            entry.gain_db = gain
        entry.source.start()
        return entry.source

    def _new_source(self, req: PlayRequest, gain_db: float, skip_ms: float) -> PcmSource:
        """``skip_ms``: joined late, the source starts that far in (a pass of a clip, or
        that much less of a stream)."""
        if req.clip_path is not None:
            passes, into = divmod(skip_ms, req.duration_ms)
            return ClipSource(
                req.clip_path,
                self._pool,
                gain_db=gain_db,
                repeat=req.repeat - int(passes),
                start_ms=into,
                chunk_ms=self.chunk_ms,
            )
        assert req.stream_url is not None

        def fault(reason: str, detail: str) -> None:
            self._proof.fault(req.key, reason, detail)

        policy = self.relay  # the speaker's own fallback clip, unless the relay names one
        if req.fallback_path is not None:
            policy = replace(policy, fallback_clip=req.fallback_path)
        return StreamRelay(
            req.stream_url,
            req.duration_ms - skip_ms,
            authorization=req.stream_auth,
            direct_url=req.direct_url,
            gain_db=gain_db,
            on_fault=fault,
            chunk_ms=self.chunk_ms,
            jitter_ms=self.ahead_ms,
            policy=policy,
            pool=self._pool,
        )

    def _regain(self, entry: Entry, gain_db: float) -> None:
        """Restart the source where it is, at a new gain (ffmpeg applies it)."""
        assert entry.source is not None
        old, entry.source = entry.source, entry.source.remainder(gain_db)
        if isinstance(old, StreamRelay) and isinstance(entry.source, StreamRelay):
            entry.source.carry_on(old)  # one play: one account of its gaps
        old.close()
        entry.gain_db = gain_db
        entry.source.start()

    def _discard(self, entry: Entry) -> None:
        if entry.source is not None:
            entry.source.close()
            entry.source = None

    # the sink

    def _open_sink(self, entry: Entry) -> None:
        """Open ahead of the start; a failure is reported and tried again at the first write."""
        if self._sink_open:
            return
        try:
            self.sink.open(RATE, CHANNELS, key=entry.req.key, label=entry.req.label)
            self._sink_open = True
        except SinkError as exc:
            self._fault(entry, exc)

    def _write(self, entry: Entry, chunk: bytes) -> float | None:
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

    def _close_sink(self, entry: Entry, *, drain: bool) -> bool:
        if not self._sink_open:
            return True
        self._sink_open = False
        try:
            self.sink.close(drain=drain)
        except SinkError as exc:
            self._fault(entry, exc)
            return False
        return True

    # proof of play

    def _drop(self, entry: Entry, reason: str, detail: str = "") -> None:
        self._discard(entry)
        self._proof.missed(entry, reason, detail)

    def _fault(self, entry: Entry, exc: SinkError) -> None:
        log.warning("audio device: %s", exc)
        self._proof.fault(entry.req.key, exc.reason, exc.detail)
