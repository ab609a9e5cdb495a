"""The kiosk's ticket file kept in step with its office's shared queue.

With ``[kiosk] queue`` set, the shared queue (kiosk/shared_queue.py) decides
numbers and calls; the ticket file stays what the pages, the printer and the
ratings read, holding every ticket of the office: each act is decided by the
shared queue first, then done on the file, under one lock with the mirroring
of the peers' acts, so that the two never disagree on a ticket's state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kiosk.office_log import QueuedTicket
from kiosk.shared_queue import SharedQueue
from kiosk.ticket_store import Mirrored, TicketStore


class Replica:
    def __init__(self, shared: SharedQueue, store: TicketStore) -> None:
        self.shared = shared
        self.store = store
        self._lock = threading.RLock()
        self._seen: dict[str, QueuedTicket] = {}

    @contextmanager
    def acting(self) -> Iterator[SharedQueue]:
        """Decide on the shared queue, then act on the file; both see the same tickets."""
        with self._lock:
            self._mirror_locked()
            yield self.shared
            self._mirror_locked()

    def mirror(self) -> None:
        """After a peer's acts arrive (paho's thread)."""
        with self._lock:
            self._mirror_locked()

    def _mirror_locked(self) -> None:
        changed = [t for t in self.shared.settled().tickets.values() if self._seen.get(t.id) != t]
        if not changed:
            return
        mine = self.shared.kiosk
        self.store.mirror([
            Mirrored(t.id, t.service, t.queue, t.day, t.n, t.number, t.priority, t.issued_ms,
                     t.state, t.counter, t.called_ms, own=t.kiosk == mine, booking=t.booking,
                     slot_ms=t.slot_ms)
            for t in changed
        ])  # fmt: skip
        self._seen.update((t.id, t) for t in changed)
