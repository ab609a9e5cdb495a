"""Pages of the device list shared by the requests that ask for them at once.

Eight operators, a wall screen and a script asking for the first page of
10,000 devices within a second all get the one answer built for the first of
them: its queries and its JSON or HTML are made once, not per request. An
answer is kept while nothing it shows was written (controller/db/fleet_writes.py
counts the commits) and for at most MAX_AGE_MS by the app's clock, which
bounds what another replica wrote and the offline limit's passing. Requests
for the same page that miss at once wait for one build rather than each
making their own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")
MAX_AGE_MS = 1000
SIZE = 512  # pages kept; the least recently read goes first
STRIPES = 16  # builds of different pages run side by side, of one page one at a time


class _Entry(NamedTuple):
    version: int
    made_ms: int
    value: Any


class SharedPages:
    def __init__(
        self,
        version: Callable[[], int],
        clock_ms: Callable[[], int],
        *,
        max_age_ms: int = MAX_AGE_MS,
        size: int = SIZE,
    ) -> None:
        self.version = version
        self.clock_ms = clock_ms
        self.max_age_ms = max_age_ms
        self.size = size
        self.builds = 0  # answers made: tests and benches read it
        self.shared = 0  # answers given that were made for an earlier request
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._building = [threading.Lock() for _ in range(STRIPES)]

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The kept answer for ``key`` if still current, else ``build()``'s, kept."""
        found = self._current(key)
        if found is not None:
            return found.value  # type: ignore[no-any-return]
        with self._building[hash(key) % STRIPES]:
            found = self._current(key)  # another request built it while this one waited
            if found is not None:
                return found.value  # type: ignore[no-any-return]
            # read before the build: a write committed during it makes the answer stale
            version, now = self.version(), self.clock_ms()
            value = build()
            with self._lock:
                self._entries[key] = _Entry(version, now, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
                self.builds += 1
            return value

    def _current(self, key: Hashable) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            age = self.clock_ms() - entry.made_ms
            if entry.version != self.version() or not 0 <= age < self.max_age_ms:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            self.shared += 1
            return entry
