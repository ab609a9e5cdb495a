"""The controller's MQTT adapter: the one module of the controller that imports paho.

paho's network thread only hands messages to a queue; one worker thread runs
the handlers, so a slow handler or a handler that publishes and waits for its
PUBACK never blocks the thread that delivers that PUBACK (paho #875). The
hand-off is a deque drained in chunks and the handlers of a topic are looked
up once, since ingest passes tens of thousands of messages a second through
here.
Subscriptions are made again on every CONNACK (paho #375) and reconnection is
paho's own, with a full-jitter delay set before each attempt (paho #871).

A batched handler (ingest's) is the exception: it runs on paho's network
thread itself, with no hand-off, and must not block except to slow the reads
down (backpressure); a topic it covers reaches no other handler. paho here
reads its socket in large chunks (plumbing/mqtt_reads.py).

A message is acknowledged to the broker (PUBACK) only once every handler is
done with it: a plain handler when it returns, a settling handler when it
calls the `done` it is given, a batched handler when its ticket is passed to
`Bus.settle` (ingest, once its transaction has committed).
With a persistent session the broker keeps what is not acknowledged, and what
arrives while the controller is away, and delivers it again after the next
CONNACK; so a crash between arrival and commit loses nothing. An ack is sent
only on the connection the message came on: after a reconnect the broker
sends it again, and ingest stores it once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from plumbing.backoff import Backoff
from plumbing.mqtt_client import arm_backoff, guarded, new_client
from protocol.envelope import MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
Done = Callable[[], None]
SettlingHandler = Callable[[str, bytes, Done], None]
Ticket = int | None
"""A message to acknowledge with `Bus.settle`; None for QoS 0 (nothing to acknowledge)."""
BatchedHandler = Callable[[str, bytes, Ticket], None]
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 30.0
KEEPALIVE_S = 30
# Enough to ride out a burst; a full queue slows paho's reads (and so the broker), never drops.
INBOUND_QUEUE = 100_000
SUBACK_TIMEOUT_S = 10.0
DISPATCH_CHUNK = 1000
# After a short chunk the worker lets more gather for this long instead of waking per message:
# paho's thread, which releases the GIL on every read, then does not wait for it each time.
DISPATCH_PAUSE_S = 0.002
MATCH_CACHE = 50_000  # topics whose handlers are known; cleared when full
_STOP = object()


class BusError(Exception):
    """The broker could not be reached or did not acknowledge in time."""


@dataclass(frozen=True)
class _Subscription:
    topic_filter: str
    match: str  # the filter without a "$share/<group>/" prefix: what topics it covers
    handler: Any  # a Handler, or a SettlingHandler when `settles`
    qos: int
    settles: bool = False
    batched: bool = False


class _Settle:
    """One message's ack, sent when the last of its settling handlers is done."""

    __slots__ = ("_ack", "_left", "_lock")

    def __init__(self, ack: Done, handlers: int) -> None:
        self._ack, self._left, self._lock = ack, handlers, threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._ack()


class _AckWaits:
    """Waits for acks by message id, including acks that arrive before the wait starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, threading.Event] = {}
        self._early: set[int] = set()
        self._unwatched: set[int] = set()  # sent without a wait: their acks are dropped

    def arrived(self, mid: int) -> None:
        with self._lock:
            if mid in self._unwatched:
                self._unwatched.discard(mid)
                return
            done = self._waiting.pop(mid, None)
            if done is None:
                self._early.add(mid)
        if done is not None:
            done.set()

    def unwatched(self, mid: int) -> None:
        """Nobody waits for ``mid``: drop its ack, even one that came already, so it
        never counts for a later message with the same (reused) id."""
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
            else:
                self._unwatched.add(mid)

    def wait(self, mid: int, timeout_s: float) -> bool:
        """True once ``mid`` is acked. On a timeout the wait stays registered, so
        a late ack is consumed here and never counts for a later message with
        the same (reused) id."""
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                return True
            done = self._waiting[mid] = threading.Event()
        return done.wait(timeout_s)


class _Inbox:
    """A bounded FIFO from paho's thread to the worker, drained in chunks.

    A put is a deque append; the condition is only used when the worker sleeps
    on an empty inbox or the network thread on a full one (which slows paho's
    reads, and so the broker, rather than dropping anything).
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition(threading.Lock())
        self._getter_waiting = False
        self._putters_waiting = 0

    def put(self, item: Any) -> None:
        items = self._items
        if len(items) >= self._maxsize:
            with self._cond:
                self._putters_waiting += 1
                while len(items) >= self._maxsize:
                    self._cond.wait()
                self._putters_waiting -= 1
        items.append(item)
        if self._getter_waiting:  # set under the lock before the getter re-checks and waits
            with self._cond:
                self._cond.notify_all()

    def get_many(self, limit: int) -> list[Any]:
        """Up to ``limit`` items, oldest first; blocks while there are none."""
        items = self._items
        if not items:
            with self._cond:
                self._getter_waiting = True
                while not items:
                    self._cond.wait()
                self._getter_waiting = False
        popleft = items.popleft
        chunk = [popleft() for _ in range(min(limit, len(items)))]
        if self._putters_waiting:
            with self._cond:
                self._cond.notify_all()
        return chunk


def _match_filter(topic_filter: str) -> str:
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ValueError(f"shared subscription {topic_filter!r} needs $share/<group>/<filter>")
        return parts[2]
    return topic_filter


def _overlap(a: str, b: str) -> bool:
    """Whether two topic filters (without "$share/...") can match the same topic."""
    pa, pb = a.split("/"), b.split("/")
    for x, y in zip(pa, pb, strict=False):
        if "#" in (x, y):
            return True
        if x != y and "+" not in (x, y):
            return False
    if len(pa) == len(pb):
        return True
    longer = pa if len(pa) > len(pb) else pb
    return longer[min(len(pa), len(pb))] == "#"  # "a/#" matches "a"


class Bus:
    """A long-lived MQTT session with handlers run off the network thread
    (batched handlers excepted)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        client_id: str,
        tls: bool = False,
        tls_ca: Path | None = None,
        clean_session: bool = True,
    ) -> None:
        """TLS when ``tls`` or a ``tls_ca`` is given: with no CA file, the system's CAs.
        ``clean_session=False``: the broker keeps this client id's subscriptions and
        queues its messages while it is away (ingest's stable identity)."""
        self.host, self.port = host, port
        self._subs: tuple[_Subscription, ...] = ()  # replaced whole, read without the lock
        self._matches: dict[str, tuple[_Subscription, ...]] = {}  # by topic, for self._subs
        self._inline: dict[str, Any] = {}  # by topic: its batched handler, or False
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._ready = threading.Event()  # connected, and the first SUBACK is in
        self._resub_mid: int | None = None  # the SUBACK that answers on_connect's subscribe
        self._pubacks = _AckWaits()
        self._subacks = _AckWaits()
        self._inbound = _Inbox(INBOUND_QUEUE)
        self._backoff = Backoff(RECONNECT_BASE_S, RECONNECT_CAP_S)
        self._worker: threading.Thread | None = None
        self._generation = 0  # CONNACKs so far: an ack goes only on its message's connection
        client = new_client(
            client_id,
            username,
            password,
            clean_session=clean_session,
            tls=tls or tls_ca is not None,
            ca_file=tls_ca,
            max_inflight=200,
            manual_ack=True,
            chunked_reads=True,
        )
        client.on_connect = guarded(self._on_connect)
        client.on_disconnect = guarded(self._on_disconnect)
        client.on_connect_fail = guarded(self._on_connect_fail)
        client.on_message = guarded(self._on_message)
        client.on_publish = guarded(self._on_publish)
        client.on_subscribe = guarded(self._on_subscribe)
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, timeout_s: float = 10) -> None:
        """Connect and subscribe; raise BusError if not done in time.

        Once it returns, every subscription made before is acknowledged by the
        broker: a message published after that reaches the handlers.
        """
        self._worker = threading.Thread(target=self._dispatch, name="bus-worker", daemon=True)
        self._worker.start()
        self._arm_backoff()
        self._client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        if not self._ready.wait(timeout_s):
            reason = self._refused or "no answer"
            self.close()
            raise BusError(
                f"cannot connect to the MQTT broker at {self.host}:{self.port} "
                f"within {timeout_s} s ({reason}): check the address and the credentials"
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        if self._worker is not None:
            self._inbound.put(_STOP)
            self._worker.join(10)
            self._worker = None

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Run ``handler(topic, payload)`` for every message matching the filter.

        ``$share/<group>/<filter>`` splits the messages among every client that
        subscribes with the same group, so ingest can run in several processes.
        While connected, it returns once the broker has acknowledged it.
        """
        self._add(_Subscription(topic_filter, _match_filter(topic_filter), handler, qos))

    def subscribe_settled(self, topic_filter: str, handler: SettlingHandler, qos: int = 1) -> None:
        """As `subscribe`, but each message is acknowledged only when ``handler``
        calls the ``done`` it is given, from any thread: what is not done by then
        is delivered again after a reconnect (at least once, to the end)."""
        self._add(_Subscription(topic_filter, _match_filter(topic_filter), handler, qos, True))

    def subscribe_batched(self, topic_filter: str, handler: BatchedHandler, qos: int = 1) -> None:
        """Run ``handler(topic, payload, ticket)`` on paho's network thread for every
        message matching the filter, and no other handler: no hand-off to a worker, for
        a stream of many messages (ingest). The handler must not block but to slow the
        reads down, and gives each ticket to `settle` once it is done with its message
        (from any thread); what is not settled comes again after a reconnect."""
        sub = _Subscription(topic_filter, _match_filter(topic_filter), handler, qos, batched=True)
        self._add(sub)

    def settle(self, tickets: Iterable[Ticket]) -> None:
        """Acknowledge the messages of these tickets (a batched handler's), unless the
        connection they came on is gone: the broker then sends them again."""
        generation, ack = self._generation, self._client.ack
        for ticket in tickets:
            if ticket is not None and ticket >> 18 == generation:
                ack(ticket & 0xFFFF, ticket >> 16 & 3)

    def _add(self, sub: _Subscription) -> None:
        topic_filter, qos = sub.topic_filter, sub.qos
        with self._lock:
            for other in self._subs:
                if (sub.batched or other.batched) and _overlap(sub.match, other.match):
                    raise ValueError(
                        f"{topic_filter} overlaps {other.topic_filter}: a batched "
                        "subscription must be the only one for its topics"
                    )
            self._subs = (*self._subs, sub)
            self._matches = {}  # after _subs: the worker reads them in the other order
            self._inline = {}
            connected = self._connected.is_set()
        if not connected:  # the next CONNACK subscribes it
            return
        rc, mid = self._client.subscribe(topic_filter, qos=qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # the connection just dropped: the next CONNACK subscribes it
        if not self._subacks.wait(mid, SUBACK_TIMEOUT_S):
            raise BusError(f"the broker did not acknowledge the subscription {topic_filter}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10,
    ) -> None:
        """Publish and block until the broker has it (PUBACK for QoS 1).

        The size is checked here because Mosquitto drops an oversized message
        while still acknowledging it.
        """
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES} for {topic}")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise BusError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        if not self._pubacks.wait(info.mid, timeout_s):
            raise BusError(f"the broker did not acknowledge {topic} within {timeout_s} s")

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 1) -> bool:
        """Hand a message to paho without waiting for its PUBACK (ingest's receipts, sent
        from the writer thread); False when paho cannot take it. While disconnected
        paho keeps a QoS 1 message and sends it after the reconnect."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES} for {topic}")
        info = self._client.publish(topic, payload, qos=qos)
        taken = info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
        if taken and qos > 0:
            self._pubacks.unwatched(info.mid)
        return taken

    # paho's network thread

    def _arm_backoff(self) -> None:
        arm_backoff(self._client, self._backoff)

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.warning("the broker refused the controller: %s", reason)
            return
        self._backoff.reset()
        with self._lock:
            subs = [(s.topic_filter, s.qos) for s in self._subs]
            self._generation += 1
            self._connected.set()
        if not subs:
            self._ready.set()
            return
        rc, mid = client.subscribe(subs)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._resub_mid = mid
        log.info("connected to the MQTT broker at %s:%d", self.host, self.port)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self._connected.is_set():
            log.warning("disconnected from the MQTT broker: %s", reason)
        self._connected.clear()
        self._arm_backoff()

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        self._arm_backoff()

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        self._pubacks.arrived(mid)

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        if mid == self._resub_mid:
            self._ready.set()
        else:
            self._subacks.arrived(mid)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        handler = self._inline.get(topic)
        if handler is None:
            handler = self._inline_handler(topic)
        if not handler:
            self._inbound.put((topic, msg.payload, msg.mid, msg.qos, self._generation))
            return
        qos = msg.qos
        # the connection, the QoS and the message id in one int: nothing to collect
        ticket = self._generation << 18 | qos << 16 | msg.mid if qos else None
        try:
            handler(topic, msg.payload, ticket)
        except Exception:
            log.exception("batched handler failed on %s", topic)
            self.settle((ticket,))  # not held for ever: the broker would resend it each time

    def _inline_handler(self, topic: str) -> Any:
        """The batched handler covering ``topic``, or False; remembered per topic."""
        inline = self._inline  # before _subs: _add changes them in the other order
        found = next(
            (s.handler for s in self._subs if s.batched and paho.topic_matches_sub(s.match, topic)),
            False,
        )
        if len(inline) >= MATCH_CACHE:
            inline.clear()
        inline[topic] = found
        return found

    # the worker thread

    def _dispatch(self) -> None:
        while True:
            chunk = self._inbound.get_many(DISPATCH_CHUNK)
            for item in chunk:
                if item is _STOP:
                    return
                topic, payload, mid, qos, generation = item
                subs = self._matching(topic)
                settling = 0
                for sub in subs:
                    if sub.settles:
                        settling += 1
                        continue
                    try:
                        sub.handler(topic, payload)
                    except Exception:
                        log.exception("handler for %s failed on %s", sub.topic_filter, topic)
                if not settling:
                    self._ack(mid, qos, generation)
                    continue
                settle = _Settle(partial(self._ack, mid, qos, generation), settling)
                for sub in subs:
                    if sub.settles:
                        try:
                            sub.handler(topic, payload, settle.done)
                        except Exception:
                            log.exception("handler for %s failed on %s", sub.topic_filter, topic)
                            settle.done()
            if len(chunk) < DISPATCH_CHUNK:
                time.sleep(DISPATCH_PAUSE_S)

    def _ack(self, mid: int, qos: int, generation: int) -> None:
        """PUBACK a message, unless the connection it came on is gone: the broker
        then sends it again on the new one (and that copy is acked instead)."""
        if qos > 0 and generation == self._generation:
            self._client.ack(mid, qos)

    def _matching(self, topic: str) -> tuple[_Subscription, ...]:
        """The subscriptions covering ``topic``; paho's matcher is slow, so remember."""
        matches = self._matches
        found = matches.get(topic)
        if found is None:
            found = tuple(
                s for s in self._subs if not s.batched and paho.topic_matches_sub(s.match, topic)
            )
            if len(matches) >= MATCH_CACHE:
                matches.clear()
            matches[topic] = found
        return found
