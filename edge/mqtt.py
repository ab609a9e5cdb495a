"""The edge's MQTT session: the only module on the edge that imports paho.

paho owns the network thread and reconnection (PITFALLS: no second reconnect
loop beside ``loop_start``); we give it a full-jitter delay before each
attempt through its public ``reconnect_delay_set``. Every callback is guarded
and hands work on without blocking, and subscriptions are made in
``on_connect`` every time, since a broker that lost its state forgets them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from plumbing.backoff import Backoff
from plumbing.mqtt_client import arm_backoff, guarded, new_client
from plumbing.takeover import TakeoverGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    username: str
    password: str | None
    keepalive_s: int = 30
    tls: bool = False
    ca_file: Path | None = None
    bind_address: str = ""  # the local address to connect from; empty: the system's choice
    takeover_stable_s: float = 300.0
    takeover_hold_s: float = 30.0
    takeover_hold_max_s: float = 1800.0


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes


class MqttLink:
    """One MQTT session that keeps itself connected until ``close``."""

    def __init__(
        self,
        settings: LinkSettings,
        backoff: Backoff,
        *,
        will: Will,
        subscriptions: Callable[[], Sequence[str]],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None],
        on_message: Callable[[str, bytes], None],
        on_published: Callable[[int], None],
    ) -> None:
        self._settings = settings
        self._backoff = backoff
        self._subscriptions = subscriptions
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._on_published = on_published
        self._connected = threading.Event()
        self.connections = 0  # accepted since start
        self.takeover = TakeoverGuard(
            settings.takeover_stable_s, settings.takeover_hold_s, settings.takeover_hold_max_s
        )
        client = new_client(
            settings.client_id,
            settings.username,
            settings.password,
            clean_session=False,  # the broker queues commands across a short outage
            tls=settings.tls,
            ca_file=settings.ca_file,
            max_inflight=50,
        )
        client.will_set(will.topic, will.payload, qos=1, retain=True)
        client.on_connect = guarded(self._handle_connect)
        client.on_disconnect = guarded(self._handle_disconnect)
        client.on_connect_fail = guarded(self._handle_connect_fail)
        client.on_message = guarded(self._handle_message)
        client.on_publish = guarded(self._handle_publish)
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        self._arm_backoff()
        self._client.connect_async(
            self._settings.host,
            self._settings.port,
            keepalive=self._settings.keepalive_s,
            bind_address=self._settings.bind_address,
        )
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """Hand a message to paho; its message id, or None if paho's queue is full.

        A QoS 1 message handed over while disconnected stays with paho and goes
        out on reconnect; QoS 0 is dropped then, as MQTT says.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return info.mid
        return None

    def local_address(self) -> str | None:
        """The address this connection comes from, as the broker sees it without NAT."""
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
            return None
        try:
            return str(sock.getsockname()[0])
        except OSError:
            return None

    def close(self, last_words: Will | None, timeout_s: float = 5.0) -> None:
        """Clean shutdown: the broker sends no Will on DISCONNECT, so say it ourselves."""
        if last_words is not None and self.connected:
            info = self._client.publish(last_words.topic, last_words.payload, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                log.warning("could not publish the offline status before disconnecting")
        self._client.disconnect()
        self._client.loop_stop()

    # callbacks, on paho's network thread

    def _arm_backoff(self) -> None:
        arm_backoff(self._client, self._backoff)

    def _handle_connect(
        self, client: paho.Client, _ud: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self._backoff.reset()
        self.connections += 1
        self.takeover.connected(time.monotonic())
        topics = list(self._subscriptions())
        if topics:
            client.subscribe([(t, 1) for t in topics])
        self._connected.set()
        log.info("connected to %s:%d", self._settings.host, self._settings.port)
        self._on_connected()

    def _handle_disconnect(
        self, _c: paho.Client, _ud: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            log.warning("disconnected from the broker: %s", reason)
        hold_s = self.takeover.lost(time.monotonic())
        if hold_s is None:
            self._arm_backoff()
        else:
            self._client.reconnect_delay_set(min_delay=hold_s, max_delay=hold_s)  # type: ignore[arg-type]
            log.warning(
                "thrown off the broker %d times in a row soon after connecting, and another "
                "device runs with this identity (a cloned SD card?); waiting %.0f s before "
                "reconnecting. Give one of them its own identity (xaso device add).",
                self.takeover.thrown_off,
                hold_s,
            )
        if was_connected:
            self._on_disconnected()

    def _handle_connect_fail(self, _c: paho.Client, _ud: Any) -> None:
        self.takeover.unreachable()
        self._arm_backoff()

    def _handle_message(self, _c: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
        self._on_message(msg.topic, bytes(msg.payload))

    def _handle_publish(
        self, _c: paho.Client, _ud: Any, mid: int, _reason: ReasonCode, _props: Any
    ) -> None:
        self._on_published(mid)

    def change_subscriptions(self, added: Sequence[str], removed: Sequence[str]) -> None:
        """After the topic set changed (new groups): effective at once, and on every reconnect."""
        if added:
            self._client.subscribe([(t, 1) for t in added])
        if removed:
            self._client.unsubscribe(list(removed))
