"""Ingest: what devices send up, validated and written to the database in batches.

paho's network thread parses and validates each message itself, with no
hand-off to another thread (`Bus.subscribe_batched`): a bad one is counted and
logged, never stored; an event's body is read by its type's model in
protocol.events, and a type this controller does not know yet is kept as it
came, so a newer agent loses nothing. A telemetry sample is queued as the
plain tuple of its columns (`ingest_writes.sample_of`), and its model dropped
at once: thousands of models waiting for their batch cost more in garbage
collection than their validation. The queues are deques; the thread that
takes messages and the writer each keep their own count, so a message takes
no lock, and the writer takes one per batch.

One writer thread drains the queues into one transaction per batch, so
throughput grows with load instead of paying a commit per message. Below a
full batch the writer commits at most every BATCH_INTERVAL_S (an ack ends the
wait), so each device's latest state is written once per batch, not once per
message, and an idle fleet costs one small transaction a second.

Nothing is acknowledged to the broker before it is committed: the bus gives
each message a ticket, and the writer settles the batch's tickets after its
transaction (controller/bus.py). Ingest's client keeps a persistent session
under a stable id per replica, so what arrives while it is down, or was read
but not yet written when it died, is delivered again (docs/delivery.md).
While the database cannot be reached the writer retries the batch without
end, and the broker holds the rest; a batch the database refuses for its
content is written message by message, and only a message refused alone is
dropped (logged and counted).

Several ingest processes may run at once. Telemetry, events and acks come
through a shared subscription (``$share/<group>/...``): each message reaches
one replica. Events are inserted with ON CONFLICT DO NOTHING on (device,
event id), so a redelivery, or the same event reaching two replicas after a
broker restart, is stored once. Status messages are few and order matters
(online, then the Will's offline), so every replica subscribes to all of
them, unshared, and applies them in order; the writes are idempotent.

The group's name is derived from the controller's MQTT password
(`share_group_for`). Any client may join a shared group it names, and the
broker then deals it its share of the messages even when the ACL lets it
read none of them: a device that joined "ingest" would silently take its
share of the whole fleet's records away from the controller. A device's
credentials do not tell it the controller's group.

After each commit the writer sends every device of the batch one receipt
listing the ids of its events that are now in the database, those that were
there already included (a resend after a lost receipt), and then settles the
batch with the broker. The edge keeps each event until a receipt names it, so
a broker that crashes before its snapshot loses nothing (docs/delivery.md).
A replica receipts what it committed; on a shared subscription each event
reaches one replica, and a copy that reaches two is receipted twice, which
the edge ignores.

What each batch writes, and how, is in controller/fleet/ingest_writes.py.
Retention and downsampling are in controller/fleet/rollups.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller.bus import Bus
from controller.fleet.ingest_writes import (
    S_TICKET,
    AckHook,
    Item,
    Sample,
    SeenDevices,
    sample_of,
    write_batch,
)
from plumbing.clock import wall_ms
from protocol.errors import ProtocolError
from protocol.events import read_body
from protocol.receipts import receipts_for
from protocol.topics import Topics
from protocol.uplink import Ack, Event, Open, Status, Telemetry, read_uplink

log = logging.getLogger(__name__)

Clock = Callable[[], int]
SHARED_LEAVES = ("telemetry", "event", "ack")
MODELS: dict[str, type[Open]] = {
    "status": Status,
    "telemetry": Telemetry,
    "event": Event,
    "ack": Ack,
}
BATCH_MAX = 5000
# At most one commit a second below a full batch: 1,000 devices every 30 s then cost one
# transaction a second, not one per message. An ack (someone waits on it) cuts the wait short.
BATCH_INTERVAL_S = 1.0
WRITE_RETRIES = 5  # a batch the database refuses this often is written message by message
RETRY_CAP_S = 5.0
MAX_PENDING = 4 * BATCH_MAX  # messages validated but not yet written, before the bus waits
TOPIC_CACHE = 50_000  # parsed topics kept; cleared when full (a flood of odd topics)


def share_group_for(secret: str) -> str:
    """The shared-subscription group of every replica holding ``secret``; unguessable
    without it, and not the secret itself (the broker logs subscriptions)."""
    digest = hashlib.sha256(b"xaso ingest group\0" + secret.encode()).hexdigest()
    return f"ingest-{digest[:24]}"


def leaf_of(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]


@dataclass
class IngestStats:
    """Counters since start; ``bad`` by leaf, so an operator sees what is malformed."""

    received: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    stored: Counter[str] = field(default_factory=Counter)
    duplicate_events: int = 0
    batches: int = 0
    dropped: int = 0  # messages the database refused on their own, WRITE_RETRIES times
    write_errors: int = 0  # failed attempts to write a batch
    receipts: int = 0  # receipt messages handed to the bus
    receipt_errors: int = 0  # receipts paho would not take (the edge sends again)


class Ingest:
    """Subscribes to every device's uplink and writes it to the database."""

    def __init__(
        self,
        bus: Bus,
        sessions: sessionmaker[Session],
        topics: Topics | None = None,
        *,
        share_group: str | None = "ingest",
        clock: Clock = wall_ms,
        batch_max: int = BATCH_MAX,
        batch_interval_s: float = BATCH_INTERVAL_S,
        max_pending: int = MAX_PENDING,
        on_acks: AckHook | None = None,
        receipts: bool = True,
    ) -> None:
        self.bus = bus
        self.sessions = sessions
        self.topics = topics or Topics()
        self.share_group = share_group
        self.clock = clock
        self.batch_max = batch_max
        self.batch_interval_s = batch_interval_s
        self.max_pending = max_pending
        self.on_acks = on_acks
        self.receipts = receipts
        self.stats = IngestStats()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified after each batch
        self._taken = 0  # messages queued: counted only by the thread that takes them
        self._written = 0  # of those, written (or dropped): counted only by the writer
        self._samples: deque[Sample] = deque()
        self._others: deque[Item] = deque()  # status, events, acks
        self._wake = threading.Condition(threading.Lock())  # the writer waits for work
        self._writer_waiting = False
        self._stopping = False
        self._urgent = threading.Event()  # an ack is queued: the writer stops lingering
        self._writer: threading.Thread | None = None
        self._seen = SeenDevices()
        self._routes: dict[str, tuple[str, str, type[Open]]] = {}

    def subscribe(self) -> None:
        """Register the subscriptions on the bus (before or after ``bus.start()``)."""
        for leaf in ("status", *SHARED_LEAVES):
            topic_filter = self.topics.all_devices(leaf)
            if self.share_group and leaf in SHARED_LEAVES:
                topic_filter = f"$share/{self.share_group}/{topic_filter}"
            self.bus.subscribe_batched(topic_filter, self.handle)

    def start(self) -> None:
        """Writer first, then the subscriptions: call it before ``bus.start()``, so the
        messages the broker kept for this session find their handlers at CONNACK."""
        self.start_writer()
        self.subscribe()

    def start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._writer is not None:
            self._stopping = True
            self._urgent.set()  # no lingering: write what is there now
            self._notify_writer()
            self._writer.join(30)
            self._writer = None

    def wait_idle(self, timeout_s: float = 30) -> bool:
        """True once every message handed over so far is written (or dropped)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._written == self._taken, timeout_s)

    def handle(self, topic: str, payload: bytes, ticket: Any = None) -> None:
        """The bus's batched handler, on paho's network thread: parse, validate, queue;
        ``ticket`` (the bus's, or a callable) is settled once written. Never raises.
        One thread at a time calls it: the count of messages taken is its own."""
        try:
            device, leaf, model = self._routes.get(topic) or self._route(topic)
            msg = read_uplink(payload, model)  # parsed and checked in msgspec's C
        except (ProtocolError, KeyError, ValueError, msgspec.DecodeError) as exc:
            self._bad(topic, leaf_of(topic), exc)
            self._settle([ticket])  # nothing to keep: counted and logged
            return
        if self._taken - self._written >= self.max_pending:
            # Backpressure when the database falls behind: paho's thread waits here, so it
            # stops reading and the broker holds the rest, instead of memory growing.
            with self._idle:
                self._idle.wait_for(lambda: self._taken - self._written < self.max_pending)
        self._taken += 1  # before it is queued: the writer never counts more than that
        self.stats.received += 1
        if leaf == "telemetry":
            assert isinstance(msg, Telemetry)
            self._samples.append(sample_of(device, msg, self.clock(), payload, ticket))
        else:
            if isinstance(msg, Event):
                try:
                    read_body(msg.type, msg.body)
                except ProtocolError as exc:
                    # Kept all the same: the edge has deleted it, and it may be the only
                    # record of a play. Counted, and left out by the readers (reports, alerts).
                    self._bad(topic, "event_body", exc)
            self._others.append(Item(device, leaf, msg, self.clock(), payload, ticket))
            if leaf == "ack":
                self._urgent.set()
        if self._writer_waiting:  # set under _wake before the writer looks at the queues
            self._notify_writer()

    def _notify_writer(self) -> None:
        with self._wake:
            self._wake.notify()

    def _route(self, topic: str) -> tuple[str, str, type[Open]]:
        """Parse a topic once: devices send on the same few topics all the time."""
        ref = self.topics.parse(topic)
        route = (ref.id, ref.leaf, MODELS[ref.leaf])
        if len(self._routes) >= TOPIC_CACHE:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _bad(self, topic: str, kind: str, exc: Exception) -> None:
        with self._lock:
            if kind != "event_body":  # that one is kept, and counted as received
                self.stats.received += 1
            self.stats.bad[kind] += 1
            count = self.stats.bad[kind]
        if count <= 20 or count % 1000 == 0:  # a flood of bad messages must not flood the log
            log.warning("bad message #%d on %s: %s", count, topic, str(exc).splitlines()[0])

    # the writer thread

    def _write_loop(self) -> None:
        last_commit, backlog = 0.0, False
        while self._wait_for_work():
            # Let a batch gather for BATCH_INTERVAL_S since the last commit: each device's
            # state is then written once for many samples, and sleeping (rather than waking
            # per message) leaves the GIL to the thread that reads and validates. After a full
            # batch there is a backlog: no pause, or the interval would cap the rate. An ack
            # has someone waiting on it (an operator's broadcast): queuing one ends the pause.
            pause = last_commit + self.batch_interval_s - time.monotonic()
            if pause > 0 and not backlog and not self._stopping:
                self._urgent.wait(pause)
            self._urgent.clear()
            others = _take(self._others, self.batch_max)
            samples = _take(self._samples, self.batch_max - len(others))
            last_commit = time.monotonic()
            backlog = len(others) + len(samples) >= self.batch_max
            self._write_with_retries(others, samples)

    def _wait_for_work(self) -> bool:
        """Block until a message is queued; False once stopping with nothing left."""
        if self._others or self._samples:
            return True
        with self._wake:
            self._writer_waiting = True
            while not (self._others or self._samples or self._stopping):
                self._wake.wait()
            self._writer_waiting = False
        return bool(self._others or self._samples)

    def _write_with_retries(self, others: list[Item], samples: list[Sample]) -> None:
        counts = self._write(others, samples)
        stored: list[Item] = []  # the events now in the database: each gets a receipt
        if counts is None:  # refused for what it holds: find the message(s) at fault
            counts = Counter()
            singles: list[tuple[list[Item], list[Sample]]] = [([i], []) for i in others]
            singles += [([], [s]) for s in samples]
            for one, sample in singles:
                alone = self._write(one, sample)
                if alone is None:
                    leaf, device = (
                        (one[0].leaf, one[0].device) if one else ("telemetry", sample[0][0])
                    )
                    log.error("dropping a %s message from %s the database refuses", leaf, device)
                    alone = Counter({"dropped": 1})
                counts.update(alone)
                if "dropped" not in alone and one and one[0].leaf == "event":
                    stored.append(one[0])
        else:
            stored = [item for item in others if item.leaf == "event"]
        if self.receipts:
            self._send_receipts(stored)
        self._settle([item.done for item in others])
        self._settle([s[S_TICKET] for s in samples])
        with self._idle:
            self.stats.batches += 1
            self.stats.dropped += counts.pop("dropped", 0)
            self.stats.duplicate_events += counts.pop("duplicate_events", 0)
            self.stats.stored.update(counts)
            self._written += len(others) + len(samples)
            self._idle.notify_all()

    def _settle(self, tickets: list[Any]) -> None:
        """Acknowledge these messages to the broker: the bus's tickets in one call,
        and a callable (a caller's own ``done``) by calling it."""
        bus_tickets = [t for t in tickets if type(t) is int]
        if bus_tickets:
            self.bus.settle(bus_tickets)
        for t in tickets:
            if t is not None and type(t) is not int:
                t()

    def _send_receipts(self, events: list[Item]) -> None:
        """One receipt per device for its events of a committed batch, handed to paho
        without waiting: a receipt lost on the way costs only a resend, stored once."""
        by_device: dict[str, list[str]] = {}
        for item in events:
            by_device.setdefault(item.device, []).append(item.msg.id)
        sent = failed = 0
        now = self.clock()
        for device in sorted(by_device):
            topic = self.topics.receipt(device)
            for payload in receipts_for(by_device[device], now):
                try:
                    ok = self.bus.publish_nowait(topic, payload, qos=1)
                except Exception:  # never let a receipt stop the settling of a batch
                    log.exception("cannot send a receipt to %s", device)
                    ok = False
                sent, failed = sent + ok, failed + (not ok)
        with self._lock:
            self.stats.receipts += sent
            self.stats.receipt_errors += failed

    def _write(self, others: list[Item], samples: list[Sample]) -> Counter[str] | None:
        """Write one transaction; None once the database refused it WRITE_RETRIES
        times for what it holds. While it cannot be reached, try without end."""
        refusals = 0
        attempt = 0
        count = len(others) + len(samples)
        senders = {item.device for item in others}.union([s[0] for s in samples])
        # a status always marks its device seen: the offline rule counts from it
        statuses = {item.device for item in others if item.leaf == "status"}
        while True:
            attempt += 1
            now = self.clock()
            touch = self._seen.due(senders, now) | statuses
            ensure = senders - self._seen.known
            try:
                with self.sessions.begin() as session:
                    counts = write_batch(
                        session, others, now, touch, self.on_acks, ensure=ensure, samples=samples
                    )
                self._seen.written(touch, ensure, now)  # only once committed
                return counts
            except Exception as exc:
                with self._lock:
                    self.stats.write_errors += 1
                unreachable = isinstance(exc, OperationalError) or (
                    isinstance(exc, DBAPIError) and exc.connection_invalidated
                )
                if not unreachable:
                    refusals += 1
                    if refusals >= WRITE_RETRIES:
                        log.warning(
                            "the database refused %d messages %d times: %s",
                            count,
                            refusals,
                            str(exc).splitlines()[0],
                        )
                        return None
                if attempt == 1 or attempt % 20 == 0:
                    log.exception(
                        "writing %d messages failed (attempt %d); retrying", count, attempt
                    )
                time.sleep(min(RETRY_CAP_S, 0.2 * 2 ** min(attempt, 10)))


def _take(queue: deque[Any], limit: int) -> list[Any]:
    """Up to ``limit`` of the oldest; the writer alone takes from the queues."""
    popleft = queue.popleft
    return [popleft() for _ in range(min(limit, len(queue)))]
