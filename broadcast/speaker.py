"""The loudspeaker role of an agent: commands, schedules, the player, the relay.

The runner looks a few seconds ahead and hands each occurrence to the player
with its planned instant, so the clip is decoded, the sound device opened and
the amplifier on before the first sample is due. Everything it needs is on
the device: the schedule documents in the store and the clips in the cache,
so a speaker plays its day with no network at all. A play cut off with the
agent is told at the next start (broadcast/play_marks.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broadcast.audio.amplifier import Amplifier
from broadcast.audio.lateness import join
from broadcast.audio.native_decoders import decoder_pool
from broadcast.audio.player import Player
from broadcast.audio.request import PlayRequest
from broadcast.audio.sinks import AlsaSink, Sink, WavFileSink
from broadcast.cache import ClipCache, ClipUnavailable
from broadcast.fetch import HttpFetcher, basic_authorization
from broadcast.levels import ignores_quiet_hours
from broadcast.play_marks import PlayMarks, boot_id
from broadcast.recurrence import Occurrence
from broadcast.schedule import Schedule
from protocol.commands import (
    BroadcastPlay,
    BroadcastStop,
    BroadcastStream,
    ClipRef,
    ConfigSet,
    DeviceTestTone,
    ScheduleSet,
    Strict,
)
from protocol.envelope import Opened
from protocol.errors import Refusal, RefusalReason
from protocol.events import AmpState, AudioFault, Body, PlayMissed, PlayStarted, detail_text

if TYPE_CHECKING:
    from broadcast.config import SpeakerSection
    from protocol.host import RoleHost

log = logging.getLogger(__name__)
LOOKAHEAD_MS = 5_000  # decode ahead, open the device, amplifier pre-roll
TICK_S = 0.25
CHECKPOINT_EVERY_MS = 10_000  # how often the runner's progress goes to disk
PREFETCH_EVERY_S = 600.0
MISSED_BACKLOG_MS = 86_400_000
TEST_TONE_PRIORITY = 3


class Speaker:
    def __init__(
        self,
        host: RoleHost,
        cfg: SpeakerSection,
        *,
        sink: Sink | None = None,
        pin_factory: Any = None,
        fetcher: HttpFetcher | None = None,
    ) -> None:
        state = host.state_dir
        self.host = host
        self._now = host.now_ms
        self._marks = PlayMarks(host, boot_id())
        self.cache = ClipCache(
            state / "clips",
            fetcher or HttpFetcher(*host.http_credentials()),
            budget_bytes=cfg.cache_budget_mb * 1024 * 1024,
            on_fault=lambda sha, why: self._emit(AudioFault(clip=sha, reason=why)),
        )
        self.amp = (
            Amplifier(
                cfg.amp_pin,
                active_high=cfg.amp_active_high,
                preroll_ms=cfg.amp_preroll_ms,
                hold_s=cfg.amp_hold_s,
                pin_factory=pin_factory,
                on_change=lambda on, why: self._emit(AmpState(on=on, reason=why)),
            )
            if cfg.amp_pin is not None
            else None
        )
        self.sink = sink or (
            WavFileSink(cfg.wav_dir or state / "played")
            if cfg.sink == "wav"
            else AlsaSink(cfg.alsa_device)
        )
        self.player = Player(
            self.sink,
            amplifier=self.amp,
            on_event=self._emit,
            resume_preempted=cfg.resume_preempted,
            volume_pct=host.volume_pct,
            relay=cfg.relay_policy(),
            decoders=decoder_pool(native=cfg.native_decoders, keep_s=cfg.spare_decoder_keep_s),
        )
        self._prefetch_ms = int(cfg.prefetch_days * 86_400_000)
        self._docs: dict[str, ScheduleSet] = {}
        self._config: ConfigSet | None = None
        self._lock = threading.Lock()
        self._schedule = Schedule.build([])
        self._handled: dict[str, int] = {}  # occurrence key -> start, for this process
        saved = host.setting("schedule_checked_ms")
        now = self._now()
        # after a long time off, report the last day's missed items, not a month of them
        self._checked_ms = max(int(saved), now - MISSED_BACKLOG_MS) if saved is not None else now
        self._saved_ms = -CHECKPOINT_EVERY_MS  # the first look is saved at once
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._register(host)

    def _emit(self, body: Body) -> None:
        if isinstance(body, PlayStarted):
            self._marks.started(body, self._now())
        self.host.emit(body)
        self._marks.ended(body, self._now())

    def _register(self, host: RoleHost) -> None:
        host.on_command("broadcast.play", self._play)
        host.on_command("broadcast.stream", self._stream)
        host.on_command("broadcast.stop", self._stop_cmd)
        host.on_command("device.test_tone", self._test_tone)
        host.on_document("schedule.set", self._apply_schedule)
        host.on_config(self._apply_config)
        host.on_volume(self.player.set_volume)
        host.add_telemetry(self._telemetry)
        host.on_start(self._start)
        host.on_close(self.close)
        self._thread = threading.Thread(target=self._run, name="schedule", daemon=True)
        host.add_health(self._thread.is_alive)

    def _start(self) -> None:
        # plays the last run left under way: told, and not reported again as missed
        for cut in self._marks.recover(self._emit):
            self._handled[cut.key] = cut.planned_ms
        # only once the stored schedules are back: the first look covers the time
        # the agent was down, and must see what was due in it
        self._thread.start()

    # documents

    def _apply_schedule(self, topic: str, body: Strict) -> None:
        assert isinstance(body, ScheduleSet)
        with self._lock:
            self._docs[topic] = body
            self._rebuild()
        self._prefetch()

    def _apply_config(self, body: ConfigSet) -> None:
        with self._lock:
            self._config = body
            self._rebuild()

    def _rebuild(self) -> None:
        cfg = self._config
        self._schedule = Schedule.build(
            self._docs.items(),
            cfg.quiet_hours if cfg else (),
            cfg.tz if cfg else "Asia/Ho_Chi_Minh",
        )
        # look again from now: a new item may fall inside the window already scanned
        self._checked_ms = min(self._checked_ms, self._now())
        self._wake.set()

    # commands

    def _refuse_if_quiet(self, priority: int, at_ms: int | None, cmd_id: str) -> None:
        with self._lock:
            quiet = self._schedule.is_quiet(at_ms or self._now())
        if quiet and not ignores_quiet_hours(priority):
            raise Refusal(RefusalReason.QUIET_HOURS, "only emergencies play in quiet hours", cmd_id)

    def _play(self, opened: Opened) -> dict[str, Any]:
        body, env = opened.body, opened.envelope
        assert isinstance(body, BroadcastPlay)
        self._refuse_if_quiet(body.priority, body.at, env.id)
        cached = self.cache.verified(body.clip)

        def submit(path: Path) -> None:
            self.player.submit(
                PlayRequest(
                    key=env.id,
                    origin="command",
                    priority=body.priority,
                    duration_ms=body.clip.duration_ms,
                    clip_path=path,
                    gain_db=body.gain_db,
                    repeat=body.repeat,
                    at_ms=body.at,
                    label=body.label,
                )
            )

        if cached is not None:
            submit(cached)
        else:
            self._fetch_then(body.clip, submit, key=env.id, planned_ms=body.at)
        return {"queued": True, "cached": cached is not None}

    def _fetch_then(
        self, clip: ClipRef, then: Callable[[Path], None], *, key: str, planned_ms: int | None
    ) -> None:
        """Download off the command thread: a stop or an emergency must not wait behind it."""

        def work() -> None:
            try:
                then(self.cache.ensure(clip))
            except ClipUnavailable as exc:
                self._emit(
                    PlayMissed(
                        key=key,
                        planned_ms=planned_ms,
                        reason="clip_unavailable",
                        detail=detail_text(str(exc)),
                    )
                )

        threading.Thread(target=work, name=f"fetch-{key[:8]}", daemon=True).start()

    def _stream(self, opened: Opened) -> dict[str, Any]:
        body, env = opened.body, opened.envelope
        assert isinstance(body, BroadcastStream)
        self._refuse_if_quiet(body.priority, body.at, env.id)

        def submit(fallback: Path | None) -> None:
            self.player.submit(
                PlayRequest(
                    key=env.id,
                    origin="command",
                    priority=body.priority,
                    duration_ms=body.duration_s * 1000,
                    stream_url=body.url,
                    stream_auth=self._stream_auth() if body.device_auth else None,
                    direct_url=body.direct_url,
                    gain_db=body.gain_db,
                    at_ms=body.at,
                    label=body.label,
                    fallback_path=fallback,
                )
            )

        self._with_fallback(body.fallback, submit, key=env.id)
        return {"queued": True}

    def _with_fallback(
        self, clip: ClipRef | None, then: Callable[[Path | None], None], *, key: str
    ) -> None:
        """A relay's fallback clip from the cache, or fetched off the command thread first; a
        relay whose clip cannot be had still relays, as one without a fallback."""
        cached = self.cache.verified(clip) if clip is not None else None
        if clip is None or cached is not None:
            then(cached)
            return

        def work() -> None:
            try:
                path: Path | None = self.cache.ensure(clip)
            except ClipUnavailable as exc:
                path = None
                self._emit(
                    AudioFault(reason="fallback_unavailable", detail=detail_text(str(exc)), key=key)
                )
            then(path)

        threading.Thread(target=work, name=f"fallback-{key[:8]}", daemon=True).start()

    def _stream_auth(self) -> str:
        return basic_authorization(*self.host.http_credentials())

    def _stop_cmd(self, opened: Opened) -> dict[str, Any]:
        assert isinstance(opened.body, BroadcastStop)
        return {"stopped": self.player.stop(opened.body.priority_max)}

    def _test_tone(self, opened: Opened) -> dict[str, Any]:
        body = opened.body
        assert isinstance(body, DeviceTestTone)
        path = tone_wav(self.cache.dir.parent / "tones", body.frequency_hz, body.duration_s)
        self.player.submit(
            PlayRequest(
                key=opened.envelope.id,
                origin="command",
                priority=TEST_TONE_PRIORITY,
                duration_ms=int(body.duration_s * 1000),
                clip_path=path,
                gain_db=body.gain_db,
                label=f"test tone {body.frequency_hz} Hz",
            )
        )
        return {"queued": True}

    # the runner

    def _run(self) -> None:
        next_prefetch = 0.0
        while not self._stop.is_set():
            try:
                self._tick()
                self._marks.checkpoint(self.player.now_playing(), self._now())
                now_s = self._now() / 1000
                if now_s >= next_prefetch:
                    self._prefetch()
                    next_prefetch = now_s + PREFETCH_EVERY_S
            except Exception:
                log.exception("schedule runner error; going on")
            self._wake.wait(TICK_S)
            self._wake.clear()

    def _tick(self) -> None:
        now = self._now()
        until = now + LOOKAHEAD_MS
        with self._lock:
            due = self._schedule.occurrences(self._checked_ms, until)
            self._checked_ms = until
        for occ in due:
            if occ.key in self._handled:
                continue
            self._handled[occ.key] = occ.start_ms
            self._dispatch(occ, now)
        if until - self._saved_ms >= CHECKPOINT_EVERY_MS:
            self.host.set_setting("schedule_checked_ms", str(until))
            self._saved_ms = until
            horizon = now - 86_400_000
            self._handled = {k: v for k, v in self._handled.items() if v >= horizon}

    def _dispatch(self, occ: Occurrence, now: int) -> None:
        if occ.blocked is not None:
            self._missed(occ, occ.blocked)
        elif join(occ.start_ms, occ.duration_ms, now).start_ms is None:
            # its time passed while the agent was not running; one still under way is
            # submitted, and the player joins it in progress (broadcast.audio.lateness)
            self._missed(occ, "device_down")
        elif occ.clip is None:
            fallback = occ.stream.fallback if occ.stream is not None else None
            own = occ.stream is not None and occ.stream.device_auth  # the site's mount
            self._with_fallback(
                fallback,
                lambda p: self.player.submit(
                    occ.play_request(
                        fallback_path=p, stream_auth=self._stream_auth() if own else None
                    )
                ),
                key=occ.key,
            )
        else:
            path = self.cache.verified(occ.clip)
            if path is not None:
                self.player.submit(occ.play_request(path))
            else:
                self._fetch_then(
                    occ.clip,
                    lambda p: self.player.submit(occ.play_request(p)),
                    key=occ.key,
                    planned_ms=occ.start_ms,
                )

    def _missed(self, occ: Occurrence, reason: str) -> None:
        self._emit(
            PlayMissed(
                key=occ.key,
                origin="schedule",
                item_id=occ.item_id,
                occurrence=occ.local_start,
                priority=occ.priority,
                label=occ.label,
                planned_ms=occ.start_ms,
                reason=reason,
            )
        )

    def _prefetch(self) -> None:
        now = self._now()
        with self._lock:
            upcoming = self._schedule.upcoming(now, self._prefetch_ms)
        clips = [o.clip or (o.stream.fallback if o.stream else None) for o in upcoming]
        refs = {c.sha256: c for c in clips if c is not None}
        self.cache.evict(refs)
        self.cache.prefetch(refs.values())

    def _telemetry(self) -> dict[str, Any]:
        return {
            "clip_cache": self.cache.stats(),
            "audio": {
                "sink": type(self.sink).__name__,
                "playing": self.player.now_playing(),
                "decoders": self.player.decoders_taken(),
            },
            "amplifier": None if self.amp is None else {"on": self.amp.is_on},
        }

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.player.close()
        if self.amp is not None:
            self.amp.close()
        self.cache.close()


def tone_wav(directory: Path, frequency_hz: int, duration_s: float) -> Path:
    """A sine test tone as a WAV file, made once and kept (the technician's test).

    Short audio built in memory is what pydub is for; uploads, which can be
    long, go through ffmpeg as a stream instead (broadcast.audio.clips).
    """
    from pydub.generators import Sine  # imported on use: an idle speaker never needs it

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"tone-{frequency_hz}hz-{duration_s:g}s.wav"
    if not path.exists():
        tone = Sine(frequency_hz, sample_rate=48_000).to_audio_segment(
            duration=duration_s * 1000, volume=-6.0
        )
        tmp = path.with_suffix(".tmp")
        tone.set_channels(1).export(str(tmp), format="wav")
        tmp.replace(path)
    return path
