"""The amplifier's power relay, on a GPIO pin through gpiozero.

The relay goes on a pre-roll before audio (an amplifier needs a moment after
power-up, and switching it with audio already flowing thumps), so a planned
start stays exact; it goes off once nothing has played for the hold time, and
explicitly on shutdown. ``initial_value=False`` matters for active-low relay
boards, which otherwise switch on at start-up (PITFALLS, "Audio on the Pi").
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from broadcast.audio.sinks import wall_ms

log = logging.getLogger(__name__)

MAX_SLEEP_S = 1.0  # re-read the wall clock at least this often


class Amplifier:
    def __init__(
        self,
        pin: int | str,
        *,
        active_high: bool = True,
        preroll_ms: float = 1500,
        hold_s: float = 10,
        pin_factory: Any = None,
        on_change: Callable[[bool, str], None] = lambda state, reason: None,
        now_ms: Callable[[], float] = wall_ms,
    ) -> None:
        self.preroll_ms = preroll_ms
        self.hold_ms = hold_s * 1000
        self._on_change = on_change
        self._now = now_ms
        # imported here: a speaker with no relay never loads gpiozero (about 1.7 MiB)
        from gpiozero import OutputDevice

        self._relay = OutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )
        self._cond = threading.Condition()
        self._on_since: float | None = None  # when the relay went on; None while off
        self._on_from: float | None = None  # a switch-on planned for this instant
        self._until = -math.inf  # audio is expected until then
        self._closed = False
        self._reports: list[tuple[bool, str]] = []
        self._thread = threading.Thread(target=self._run, name="amplifier", daemon=True)
        self._thread.start()

    @property
    def is_on(self) -> bool:
        return self._on_since is not None

    def on_at(self, start_ms: float) -> float:
        """Be on ``preroll_ms`` before ``start_ms``; returns the earliest exact start possible."""
        with self._cond:
            now = self._now()
            on_time = start_ms - self.preroll_ms
            if on_time > now:
                if self._on_from is None or on_time < self._on_from:
                    self._on_from = on_time
                self._cond.notify()
                return start_ms
            if self._on_since is None:
                self._switch(True, "preroll")
            assert self._on_since is not None
            start = max(start_ms, self._on_since + self.preroll_ms)
            # held until the first sample, not the start asked for: with a hold shorter
            # than the pre-roll it went off just before the audio came
            self._until = max(self._until, start)
            self._cond.notify()
            return start

    def need(self, until_ms: float) -> None:
        """Audio plays until ``until_ms``; the relay stays on ``hold_s`` longer."""
        with self._cond:
            self._until = max(self._until, until_ms)
            self._cond.notify()

    def close(self) -> None:
        """Drive the relay off, whatever state it is in, and release the pin."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)
        with self._cond:
            was_on = self._on_since is not None
            self._on_since = None
            self._relay.off()
            self._relay.close()
        if was_on:
            self._report(False, "shutdown")

    def _switch(self, on: bool, reason: str) -> None:
        """Called with the lock held; the timer thread reports it, in order."""
        if on:
            self._relay.on()
            self._on_since = self._now()
        else:
            self._relay.off()
            self._on_since = None
        log.info("amplifier %s (%s)", "on" if on else "off", reason)
        self._reports.append((on, reason))

    def _report(self, on: bool, reason: str) -> None:
        try:
            self._on_change(on, reason)
        except Exception:
            log.exception("amplifier on_change callback failed")

    def _run(self) -> None:
        while True:
            with self._cond:
                now = self._now()
                if self._on_from is not None and now >= self._on_from:
                    self._on_from = None
                    self._until = max(self._until, now + self.preroll_ms)
                    if self._on_since is None:
                        self._switch(True, "preroll")
                wake = math.inf if self._on_from is None else self._on_from
                if self._on_since is not None:
                    off_at = max(self._until, self._on_since) + self.hold_ms
                    if now >= off_at:
                        self._switch(False, "idle")
                    else:
                        wake = min(wake, off_at)
                reports, self._reports = self._reports, []
                if not reports:
                    if self._closed:
                        return
                    self._cond.wait(min(MAX_SLEEP_S, max(0.0, (wake - now) / 1000)))
            for on, reason in reports:
                self._report(on, reason)
