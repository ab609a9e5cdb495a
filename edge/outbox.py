"""The durable outbox: events reach the controller's database, across any outage.

An event is written to SQLite before anything else happens to it and handed
to the MQTT client in order and in bounded batches (paho's message ids are a
16-bit space). On the broker's PUBACK an event's row is marked sent, not
deleted: a broker that crashes can still lose it (docs/delivery.md). It is
deleted when the controller's receipt names its event id. A row sent but not
receipted within ``receipt_timeout_s`` is sent again with the same id (the
controller stores each id once), the wait doubling with each resend up to
``receipt_timeout_max_s``; a reconnect brings every row past its first
timeout back at once, since the broker may have restarted. Rows without an
event id (another device's topics), and every row when receipts are off, go
on PUBACK. paho retransmits what it holds after a reconnect; after a restart
every row never PUBACKed is sent again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from edge.store import LocalStore

log = logging.getLogger(__name__)

# Publishes one row: its message id, None when the client cannot take it now,
# ValueError when it never will.
PublishFn = Callable[[str, bytes, int], int | None]
RESEND_CHECK_S = 1.0


class Outbox:
    def __init__(
        self,
        store: LocalStore,
        publish: PublishFn,
        now_ms: Callable[[], int],
        *,
        window: int = 200,
        receipts: bool = True,
        receipt_timeout_s: float = 60.0,
        receipt_timeout_max_s: float = 3600.0,
    ) -> None:
        self._store = store
        self._publish = publish
        self._now_ms = now_ms
        self._window = window
        self.receipts = receipts
        self._timeout_ms = int(receipt_timeout_s * 1000)
        self._timeout_max_ms = int(receipt_timeout_max_s * 1000)
        self.resent = 0  # rows sent again for want of a receipt, since start
        self._reconnected = False
        self._next_check = 0.0  # monotonic: when to look for rows due again
        # mid -> (seq, kept until a receipt); touched by the worker only
        self._inflight: dict[int, tuple[int, bool]] = {}
        self._cursor = 0  # highest seq handed to the client
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._connected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()

    def put(self, topic: str, payload: bytes, qos: int = 1, event_id: str | None = None) -> int:
        """Store a message durably and schedule it; returns its sequence number.

        With an ``event_id`` (and receipts on) the row stays until a receipt names it."""
        kept = event_id if self.receipts and qos > 0 else None
        seq = self._store.outbox_put(topic, payload, qos, self._now_ms(), kept)
        self._wake.set()
        return seq

    def __len__(self) -> int:
        return self._store.outbox_len()

    # called from the MQTT network thread: never block there

    def connected(self) -> None:
        self._connected = True
        self._reconnected = True
        self._wake.set()

    def disconnected(self) -> None:
        self._connected = False

    def published(self, mid: int) -> None:
        self._acks.put(mid)
        self._wake.set()

    # called from the agent's inbound worker

    def receipted(self, event_ids: list[str]) -> int:
        """The controller has stored these events: their rows go (unknown ids are ignored)."""
        gone = self._store.outbox_receipted(event_ids)
        if gone:
            with self._idle:
                self._idle.notify_all()
        return gone

    # the worker

    def start(self) -> None:
        if not self.receipts:  # rows a run with receipts left waiting: sent once more, as new
            self._store.outbox_forget_receipts()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until every stored row is gone: PUBACKed, or receipted (for tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._store.outbox_len() == 0, timeout_s)

    def wait_sent(self, timeout_s: float) -> bool:
        """Wait until the broker has every row (some may still wait for a receipt)."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self._store.outbox_len() == self._store.outbox_awaiting(), timeout_s
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._settle_acks()
                if self._connected:
                    self._send_more()
                    self._resend_due()
            except Exception:  # a failing disk must not kill the worker silently
                log.exception("outbox worker error; retrying")
                self._stop.wait(1.0)

    def _settle_acks(self) -> None:
        done: list[int] = []
        kept: list[int] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            row = self._inflight.pop(mid, None)
            if row is not None:
                (kept if row[1] else done).append(row[0])
        if kept:  # a receipt that came before its PUBACK has deleted the row: no harm
            self._store.outbox_sent(kept, self._now_ms())
        if done:
            self._store.outbox_delete(done)
        if done or kept:
            with self._idle:
                self._idle.notify_all()

    def _send_more(self) -> None:
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        for row in self._store.outbox_batch(self._cursor, room):
            try:
                mid = self._publish(row.topic, row.payload, row.qos)
            except ValueError as exc:  # the broker could never take it: do not block the rest
                log.error("dropping outbox row %d that the client refuses: %s", row.seq, exc)
                self._store.outbox_delete([row.seq])
                self._cursor = row.seq
                continue
            if mid is None:
                return  # the client's queue is full: try again on the next turn
            if row.qos == 0:
                self._store.outbox_delete([row.seq])
            else:
                self._inflight[mid] = (row.seq, row.event_id is not None)
            self._cursor = row.seq

    def _resend_due(self) -> None:
        """Send again, with the same event id, what no receipt named in time. At most
        once a second (the query reads every row waiting), and at once after a reconnect."""
        if not self.receipts:
            return
        reconnected, self._reconnected = self._reconnected, False
        if reconnected:
            self._store.outbox_reset_tries()
        elif time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + RESEND_CHECK_S
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        now = self._now_ms()
        due = self._store.outbox_due(now, self._timeout_ms, self._timeout_max_ms, room)
        if not due:
            return
        started: list[int] = []
        for row in due:
            mid = self._publish(row.topic, row.payload, row.qos)
            if mid is None:
                break  # the client's queue is full: the rest next turn
            self._inflight[mid] = (row.seq, True)
            started.append(row.seq)
        # marked now, so the next turn does not pick them again before their PUBACK
        self._store.outbox_sent(started, now, resent=True)
        if len(started) == room:
            self._next_check = 0.0  # more may be due: go on at the next turn
        self.resent += len(started)
        if started:
            log.info("sent %d record(s) again: no receipt from the controller yet", len(started))
