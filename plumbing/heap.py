"""The collector told that a long-running server's start-up objects are here to stay.

A started controller holds a few hundred thousand objects that live as long as
the process (modules, the ORM's mappings, the routes, the templates' code).
CPython's full collection walks all of them: 120 to 170 ms here with the GIL
held, a dozen times a minute under load, and every request in flight waits
that long (the dashboard's p99 was made of these pauses, docs/benchmarks.md).
``gc.freeze()`` moves them out of the collector's generations once start-up is
done; what requests allocate afterwards is collected as before, and a larger
first threshold makes the young collections rarer (a request allocates
thousands of short-lived objects that reference counting frees anyway).
On the way out it is all handed back, so that a process that starts and stops
apps (the tests) can still collect them.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000  # CPython's default is 700 (3.11, 3.12)


class _Collector:
    """The apps inside long_lived(): the collector is process-wide, so the last one out
    hands it back as the first one in found it."""

    lock = threading.Lock()
    running = 0
    before = gc.get_threshold()


@contextmanager
def long_lived() -> Iterator[None]:
    """Frozen start-up objects and rarer young collections while the server runs."""
    c = _Collector
    with c.lock:
        if c.running == 0:
            c.before = gc.get_threshold()
            gc.set_threshold(YOUNG_THRESHOLD, *c.before[1:])
        c.running += 1
        gc.collect()
        gc.freeze()  # a later app's start-up objects too
    try:
        yield
    finally:
        with c.lock:
            c.running -= 1
            if c.running == 0:
                gc.set_threshold(*c.before)
                gc.unfreeze()
