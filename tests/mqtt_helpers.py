"""Small paho-mqtt 2.x helpers for tests against a real broker.

``connect`` returns a client whose CONNACK has arrived (or raises with the
broker's reason); a ``Collector`` records what a client receives so a test can
wait for a message instead of sleeping.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

_ids = itertools.count(1)


class ConnectRefused(AssertionError):
    """The broker answered CONNACK with a failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection refused: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


def connect(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    client_id: str | None = None,
    *,
    timeout: float = 30.0,
) -> paho.Client:
    """A connected client with its network loop running; close it with ``close``.

    Raises ``ConnectRefused`` with the broker's reason if CONNACK says no.
    """
    client_id = client_id or f"test-{username}-{os.getpid()}-{next(_ids)}"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if username is not None:
        client.username_pw_set(username, password)
    outcome: list[Any] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append(reason)

    client.on_connect = on_connect
    client.reconnect_delay_set(0.1, 2)
    client.connect(host, port, keepalive=30)
    # Loop by hand until CONNACK: a refused client must not start paho's reconnect loop.
    deadline = time.monotonic() + timeout
    while not outcome:
        if time.monotonic() > deadline:
            client.disconnect()
            raise TimeoutError(f"no CONNACK from {host}:{port} within {timeout} s")
        client.loop(timeout=0.05)
    client.on_connect = None
    if outcome[0].is_failure:
        client.disconnect()
        raise ConnectRefused(str(outcome[0]))
    client.loop_start()
    return client


def publish(
    client: paho.Client,
    topic: str,
    payload: bytes | str,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout: float = 30.0,
) -> None:
    """Publish and wait for the broker's PUBACK (QoS 1): what follows is ordered after it."""
    info = client.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(timeout)
    if not info.is_published():
        raise TimeoutError(f"publish to {topic} not acknowledged within {timeout} s")


def close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


class Collector:
    """Subscribes ``client`` to ``topics`` (again on every reconnect) and records messages."""

    def __init__(
        self,
        client: paho.Client,
        topics: str | Sequence[str],
        *,
        qos: int = 1,
        timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.messages: list[Message] = []
        self.granted: list[Any] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect = self._on_connect
        self._subscribe()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"no SUBACK for {self.topics} within {timeout} s")

    def _subscribe(self) -> None:
        self.client.subscribe([(t, self.qos) for t in self.topics])

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self._subscribe()

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        self.granted = list(codes)
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 30.0) -> Message:
        """The first recorded message that matches, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [m.topic for m in self.messages]
                    raise AssertionError(f"no matching message within {timeout} s; got {seen}")
                self._cond.wait(left)

    def wait_topic(
        self, topic: str, payload: bytes | None = None, timeout: float = 30.0
    ) -> Message:
        return self.wait_for(
            lambda m: m.topic == topic and (payload is None or m.payload == payload), timeout
        )

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]


class Clients:
    """Connects clients and closes them all at the end of a test."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._open: list[paho.Client] = []

    def connect(
        self, username: str | None, password: str | None, client_id: str | None = None
    ) -> paho.Client:
        client = connect(self.host, self.port, username, password, client_id)
        self._open.append(client)
        return client

    def close_all(self) -> None:
        for client in self._open:
            close(client)
        self._open.clear()
