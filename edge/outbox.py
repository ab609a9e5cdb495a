"""The durable outbox: events reach the broker at least once, across any outage.

An event is written to SQLite before anything else happens to it, handed to
the MQTT client in order and in bounded batches (paho's message ids are a
16-bit space), and deleted only when the broker's PUBACK for its message id
arrives. paho retransmits what it holds after a reconnect, so within one
process nothing is sent twice by us; after a restart every row left is sent
again, and the controller dedupes by event id.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from edge.store import LocalStore

log = logging.getLogger(__name__)

# Publishes one row: its message id, None when the client cannot take it now,
# ValueError when it never will.
PublishFn = Callable[[str, bytes, int], int | None]


class Outbox:
    def __init__(
        self,
        store: LocalStore,
        publish: PublishFn,
        now_ms: Callable[[], int],
        *,
        window: int = 200,
    ) -> None:
        self._store = store
        self._publish = publish
        self._now_ms = now_ms
        self._window = window
        self._inflight: dict[int, int] = {}  # mid -> seq; touched by the worker only
        self._cursor = 0  # highest seq handed to the client
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._connected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()

    def put(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Store a message durably and schedule it; returns its sequence number."""
        seq = self._store.outbox_put(topic, payload, qos, self._now_ms())
        self._wake.set()
        return seq

    def __len__(self) -> int:
        return self._store.outbox_len()

    # called from the MQTT network thread: never block there

    def connected(self) -> None:
        self._connected = True
        self._wake.set()

    def disconnected(self) -> None:
        self._connected = False

    def published(self, mid: int) -> None:
        self._acks.put(mid)
        self._wake.set()

    # the worker

    def start(self) -> None:
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
        """Wait until every stored row is acknowledged (for shutdown and tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._store.outbox_len() == 0, timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._settle_acks()
                if self._connected:
                    self._send_more()
            except Exception:  # a failing disk must not kill the worker silently
                log.exception("outbox worker error; retrying")
                self._stop.wait(1.0)

    def _settle_acks(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                done.append(seq)
        if done:
            self._store.outbox_delete(done)
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
                self._inflight[mid] = row.seq
            self._cursor = row.seq
