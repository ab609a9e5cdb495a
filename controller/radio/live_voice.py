"""Live voice: the browser's microphone, encoded once, on every chosen speaker.

The browser records WebM/Opus (MediaRecorder) and sends it in small chunks
over a WebSocket. One ffmpeg decodes it and encodes Opus in Ogg once; its
output goes to a recording that becomes a clip in the library and, paced by
the wall clock and stamped with the instant the speakers play it
(controller/radio/stream_source.py), to an Icecast mount, so every speaker
plays it in step. The speakers are told ``broadcast.stream``
with ``device_auth``, so they pull the mount with their own credentials.

A session ends when the broadcaster stops, the socket closes, or no audio
has come for ``silence_s`` (a browser that hangs): then ``broadcast.stop``
goes to the same speakers at the session's level, and the mount ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcast.audio.clips import ClipError
from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.broadcasting import Broadcasting
from controller.radio.clip_library import ClipInfo, ClipLibrary, ServiceError
from controller.radio.stream_source import (
    PLAYOUT_DELAY_MS,
    IcecastSource,
    Pacer,
    StreamSourceError,
)
from controller.radio.streams import StreamServer, opus_ogg_args
from controller.radio.targets import Target
from protocol.ogg import OggError

log = logging.getLogger(__name__)

MAX_SESSION_S = 2 * 3600  # what the speakers are told; a stop ends it sooner
SILENCE_S = 3.0  # no audio from the browser this long: the session ends
LEAD_MS = 1500  # the speakers connect and switch their amplifiers on before the voice
LATE_MS = 400  # a page this late still reaches speakers behind a 600 ms link in time
_CLOSE_TIMEOUT_S = 30
_REJOIN_TRIES = 10
TAIL_S = (PLAYOUT_DELAY_MS + 300) / 1000  # the last page sent is heard this long after


class LiveVoiceError(Exception):
    """The live session could not start; the message is for the operator's log."""


def _encoder_argv(ffmpeg: str) -> list[str]:
    argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-fflags", "nobuffer"]
    argv += ["-probesize", "32768", "-analyzeduration", "0", "-f", "matroska", "-i", "pipe:0"]
    # the browser's timestamps may jump when its chunks come late (a busy PC, a slow
    # link); counted from the samples instead, the recording is as long as what aired
    # and its Ogg granules agree with its audio (else the library refuses it as cut)
    argv += ["-map", "0:a:0", "-af", "asetpts=N/SR/TB"]
    return [*argv, *opus_ogg_args(), "-f", "ogg", "pipe:1"]


class LiveEncoder:
    """Browser chunks in; one Opus/Ogg encode out to a mount and to ``recording``."""

    def __init__(
        self, streams: StreamServer, mount: str, recording: Path, ffmpeg: str = "ffmpeg"
    ) -> None:
        self.recording = recording
        self._encoder = subprocess.Popen(
            _encoder_argv(ffmpeg),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._source = IcecastSource(streams, mount)
        # a browser (or its link) that stalled longer than this sends the rest late: the
        # stream starts again from there, its words kept, the delay grown by the stall
        self.pacer = Pacer(self._source.send, late_ms=LATE_MS, rejoin=self._rejoin)
        self.bytes_in = 0
        self._closing = False  # the input has ended: what is left is for the recording
        self._pump = threading.Thread(target=self._tee, name=f"live-{mount}", daemon=True)
        self._pump.start()

    def _tee(self) -> None:
        """Copy the encoded audio to the recording as it comes, and to the mount paced and
        stamped with its epoch (controller/radio/stream_source.py)."""
        assert self._encoder.stdout is not None
        on_air = True
        with self.recording.open("wb") as out:
            while chunk := os.read(self._encoder.stdout.fileno(), 4096):
                out.write(chunk)
                out.flush()
                if not on_air or self._closing:  # the last page comes late: no rejoin
                    continue
                try:
                    self.pacer.feed(chunk)
                except (StreamSourceError, OggError) as exc:  # the recording goes on
                    log.warning("live %s: the mount is lost: %s", self._source.mount, exc)
                    on_air = False
        self._source.close()

    def _rejoin(self, late_ms: float) -> None:
        """A new source connection for the new timeline: the speakers read its epoch
        when they connect again (their stream ended with the old one)."""
        log.warning("live %s: the voice came %.0f ms late; rejoined", self._source.mount, late_ms)
        self._source.close()
        for attempt in range(_REJOIN_TRIES):  # Icecast may not have seen the old one go yet
            try:
                self._source.open()
                return
            except StreamSourceError:
                if attempt == _REJOIN_TRIES - 1:
                    raise
                time.sleep(0.2)

    def feed(self, chunk: bytes) -> None:
        assert self._encoder.stdin is not None
        self._encoder.stdin.write(chunk)
        self._encoder.stdin.flush()
        self.bytes_in += len(chunk)

    def close(self, *, drain: bool = False) -> None:
        """End the input; the encoder drains, the mount ends, the recording is complete.
        ``drain``: what the encoder still holds goes to the speakers too (a Stop, right
        after the last words); else only to the recording."""
        assert self._encoder.stdin is not None
        self._closing = self._closing or not drain
        with contextlib.suppress(OSError):
            self._encoder.stdin.close()
        try:
            self._encoder.wait(_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._encoder.kill()
            self._encoder.wait()
        self._pump.join(_CLOSE_TIMEOUT_S)
        if self._encoder.returncode and self._encoder.stderr is not None:
            log.warning("live encoder: %s", self._encoder.stderr.read().decode(errors="replace"))


@dataclass
class LiveSession:
    """One broadcaster talking to ``targets`` until ``end``; audited by the route."""

    broadcasting: Broadcasting
    library: ClipLibrary
    streams: StreamServer
    targets: Sequence[Target]
    level: str
    by: str
    work_dir: Path
    label: str
    silence_s: float = SILENCE_S
    commune: str | None = None  # its author's: only their speakers, their library
    on_end: Callable[[LiveSession], None] = lambda session: None
    started: BroadcastInfo | None = None
    stopped: BroadcastInfo | None = None
    clip: ClipInfo | None = None
    mount: str = ""
    ended_by: str = ""
    principal: Any = None  # who started it, for the route's audit
    _encoder: LiveEncoder | None = None
    _last_audio: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: threading.Event = field(default_factory=threading.Event)
    _finished: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """The mount and its encoder; the speakers come with the first audio (``announce``)."""
        self.mount = self.streams.new_mount()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        recording = self.work_dir / f"{self.mount.strip('/')}"
        self._encoder = LiveEncoder(self.streams, self.mount, recording)
        self._last_audio = time.monotonic()
        threading.Thread(target=self._watch, name="live-watch", daemon=True).start()

    def announce(self) -> BroadcastInfo:
        """Tell the speakers, once audio flows: Icecast has the mount only from then on
        (ffmpeg connects its source once it has probed its input)."""
        started = self.broadcasting.play_now(
            self.targets,
            by=self.by,
            stream_url=self.streams.listener_url(self.mount),
            stream_duration_s=MAX_SESSION_S,
            device_auth=True,
            level=self.level,  # type: ignore[arg-type]
            label=self.label,
            lead_ms=LEAD_MS,
            approved=True,  # a live voice cannot wait for a leader; the audit log has it
            commune=self.commune,
        )
        assert isinstance(started, BroadcastInfo)  # approved: never held
        self.started = started
        return started

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            if self._encoder is None or self._done.is_set():
                return
            self._last_audio = time.monotonic()
            try:
                self._encoder.feed(chunk)
            except OSError:
                log.warning("live %s: the encoder stopped taking audio", self.mount)

    def _watch(self) -> None:
        """End a session whose browser went quiet (hung, or its network is gone)."""
        while not self._done.wait(0.25):
            if time.monotonic() - self._last_audio > self.silence_s:
                self.end("silence")
                return

    def end(self, why: str) -> None:
        """Stop the speakers, end the mount, keep the recording as a clip (once)."""
        with self._lock:
            if self._done.is_set():
                return
            self._done.set()
            self.ended_by = why
        try:
            if why == "stopped" and self.started is not None and self._encoder is not None:
                # the last words are on their way to the speakers: let them be heard
                self._encoder.close(drain=True)
                time.sleep(TAIL_S)
            if self.started is not None:
                self.stopped = self.broadcasting.stop(
                    self.targets,
                    by=self.by,
                    level=self.level,  # type: ignore[arg-type]
                    commune=self.commune,
                )
        finally:
            if self._encoder is not None:
                self._encoder.close()
                self.clip = self._keep(self._encoder.recording)
            self.on_end(self)
            self._finished.set()

    def _keep(self, recording: Path) -> ClipInfo | None:
        if not recording.exists() or recording.stat().st_size == 0:
            return None
        try:
            return self.library.upload(
                recording,
                title=self.label,
                created_by=self.by,
                filename="live.ogg",
                commune=self.commune,
            )
        except (ServiceError, ClipError) as exc:  # the session has ended all the same
            log.warning("live %s: the recording was not kept: %s", self.mount, exc.message_en)
            return None
        finally:
            recording.unlink(missing_ok=True)

    def wait_ended(self, timeout_s: float) -> bool:
        """Until the speakers are told to stop and the recording is kept."""
        return self._finished.wait(timeout_s)
