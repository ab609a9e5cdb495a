"""The edge's MQTT session: the only module on the edge that imports paho.

paho owns the network thread and reconnection (PITFALLS: no second reconnect
loop beside ``loop_start``); we give it a full-jitter delay before each
attempt through its public ``reconnect_delay_set``. Every callback is guarded
and hands work on without blocking, and subscriptions are made in
``on_connect`` every time, since a broker that lost its state forgets them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from plumbing.backoff import Backoff
from plumbing.mqtt_client import arm_backoff, guarded, new_client

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
            self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s
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
        self._arm_backoff()
        if was_connected:
            log.warning("disconnected from the broker: %s", reason)
            self._on_disconnected()

    def _handle_connect_fail(self, _c: paho.Client, _ud: Any) -> None:
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
