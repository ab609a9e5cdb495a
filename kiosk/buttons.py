"""The kiosk's push buttons and their LEDs: the only importer of gpiozero in kiosk/.

One button per service (and, where the office has one, a priority button),
each with an LED: steady on when a press will print, blinking while a ticket
prints, off when the printer cannot print (out of paper, cover open,
offline). A press is debounced twice: ``bounce_time`` for the pin driver,
and a guard of our own that takes one press per ``bounce_ms`` per button,
because bounce handling differs by pin driver (gpiozero's MockFactory ignores
it) and a citizen pressing twice should get one ticket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gpiozero import LED, Button

from kiosk.printing import Activity

log = logging.getLogger(__name__)
BLINK_S = 0.15


@dataclass(frozen=True)
class Binding:
    service: str
    pin: int
    led_pin: int | None = None
    priority: bool = False


class ButtonPanel:
    def __init__(
        self,
        bindings: Sequence[Binding],
        on_press: Callable[[str, bool], None],
        *,
        bounce_ms: int = 300,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_press = on_press
        self._guard_s = bounce_ms / 1000
        self._clock = clock
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()
        self._state: Activity | None = None
        self._buttons: list[Button] = []
        self._leds: list[LED] = []
        bounce = bounce_ms / 1000 if bounce_ms else None
        for b in bindings:
            button = Button(b.pin, bounce_time=bounce, pin_factory=pin_factory)
            button.when_pressed = self._handler(b)
            self._buttons.append(button)
            if b.led_pin is not None:
                self._leds.append(LED(b.led_pin, initial_value=False, pin_factory=pin_factory))

    def _handler(self, b: Binding) -> Callable[[], None]:
        def pressed() -> None:
            now = self._clock()
            with self._lock:
                last = self._last.get(b.pin)
                if last is not None and now - last < self._guard_s:
                    return
                self._last[b.pin] = now
            try:
                self._on_press(b.service, b.priority)
            except Exception:  # gpiozero's thread must survive a failed press
                log.exception("button for %s: the press failed", b.service)

        return pressed

    @property
    def state(self) -> Activity | None:
        return self._state

    def show(self, state: Activity) -> None:
        """Set every LED: ready (on), busy (blinking), out_of_paper (off)."""
        with self._lock:
            if state == self._state:
                return
            self._state = state
            for led in self._leds:
                if state == "ready":
                    led.on()
                elif state == "busy":
                    led.blink(on_time=BLINK_S, off_time=BLINK_S)
                else:
                    led.off()

    def close(self) -> None:
        for device in [*self._buttons, *self._leds]:
            device.close()
