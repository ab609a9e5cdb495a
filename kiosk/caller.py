"""Spoken calls on the hall speaker, off the officer's request thread.

Making a call's clip (espeak-ng, pydub, ffmpeg) takes a second or two the
first time; a recall of the same number reuses it (kiosk.voice.build_call).
So a counter's "call next" only queues the call here and answers at once; one
thread builds each clip and submits it to the broadcast player with origin
``call``, whose proof of play (``play.started``/``play.finished``) goes out
like any other play.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from broadcast.audio.clips import ClipError, ClipSettings
from broadcast.audio.player import Player
from broadcast.audio.tts import SpeechEngine
from kiosk.voice import build_call, call_request

log = logging.getLogger(__name__)


class Caller:
    def __init__(
        self,
        player: Player,
        engine: SpeechEngine,
        clip_dir: Path,
        *,
        now_ms: Callable[[], int],
        settings: ClipSettings | None = None,
        priority: int = 4,
        repeats: int = 2,
    ) -> None:
        self.player = player
        self._engine = engine
        self._dir = clip_dir
        self._now = now_ms
        self._settings = settings or ClipSettings()
        self._priority = priority
        self._repeats = repeats
        self._calls: queue.SimpleQueue[tuple[str, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="caller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, number: str, counter: int) -> None:
        """Queue "Xin mời số <number> đến quầy số <counter>", said after a chime."""
        self._calls.put((number, counter))

    def _run(self) -> None:
        while (job := self._calls.get()) is not None:
            number, counter = job
            try:
                clip = build_call(
                    number, counter, self._engine, self._dir, self._settings, repeats=self._repeats
                )
                self.player.submit(
                    call_request(number, counter, clip, self._now(), priority=self._priority)
                )
            except (ClipError, ValueError, OSError) as exc:
                log.error("call of %s to counter %d not made: %s", number, counter, exc)

    def close(self) -> None:
        self._calls.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=30)
