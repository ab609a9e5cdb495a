"""A step run again and again on a thread of its own, for as long as a block runs.

The controller's background work (fleet upkeep and alerts, webhook sending,
document resends) is each one such loop; this is the one place that starts,
wakes and stops them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def repeating(
    name: str,
    step: Callable[[], object],
    pause_s: float,
    *,
    wake: threading.Event | None = None,
    join_s: float = 30.0,
) -> Iterator[None]:
    """Run ``step()`` at once, then again ``pause_s`` after each run, or as soon as
    ``wake`` is set. A step that raises is logged and run again at its next turn.
    Leaving the block stops the loop and waits up to ``join_s`` for its last step."""
    stop = threading.Event()
    wake = wake or threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                step()
            except Exception:
                log.exception("%s failed; will retry", name)
            wake.wait(pause_s)
            wake.clear()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        wake.set()
        thread.join(join_s)
