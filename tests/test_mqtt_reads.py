"""paho reading its socket in large chunks (plumbing/mqtt_reads.py), on the real Mosquitto."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from cli.brokers.mosquitto import Mosquitto
from plumbing.mqtt_client import new_client
from plumbing.mqtt_reads import READ_CHUNK, ChunkedReadClient

KEEPALIVE_S = 60  # a reader that slept on bytes it had read would wake only at its ping


class Reader:
    """A chunked client subscribed to ``t/#``; collects payloads in arrival order."""

    def __init__(self, broker: Mosquitto) -> None:
        self.payloads: list[bytes] = []
        self._cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = new_client("reader", None, None, clean_session=True, chunked_reads=True)
        self.client.on_connect = lambda c, *_: c.subscribe("t/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(broker.host, broker.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.payloads.append(msg.payload)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float = 30) -> list[bytes]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.payloads) >= count, timeout_s):
                raise AssertionError(f"{len(self.payloads)} of {count} messages in {timeout_s} s")
            return list(self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker", persistence=False)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def publish_all(broker: Mosquitto, payloads: list[bytes]) -> None:
    """From a stock paho client, at QoS 1 (in order), each acknowledged by the broker."""
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="writer")
    pub.max_inflight_messages_set(1000)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        infos = [pub.publish(f"t/{n % 7}", p, qos=1) for n, p in enumerate(payloads)]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_a_burst_arrives_whole_in_order_and_the_last_message_without_waiting(broker):
    reader = Reader(broker)
    try:
        assert isinstance(reader.client, ChunkedReadClient)
        small = [b'{"n":%d}' % n for n in range(3000)]
        big = b"x" * (3 * READ_CHUNK + 17)  # one packet over several chunks
        payloads = [*small[:1500], big, *small[1500:], b"last"]
        publish_all(broker, payloads)
        # "last" ends the stream: read with the packets before it, it must not wait for
        # more bytes, which would come only with the PINGRESP a keepalive later
        assert reader.wait_for(len(payloads), timeout_s=KEEPALIVE_S / 3) == payloads
    finally:
        reader.close()


def test_after_the_broker_restarts_reading_starts_afresh(broker):
    reader = Reader(broker)
    try:
        publish_all(broker, [b"before-%d" % n for n in range(500)])
        reader.wait_for(500)
        reader.subscribed.clear()
        broker.stop()
        broker.start()
        assert reader.subscribed.wait(30)  # reconnected, subscribed again in on_connect
        publish_all(broker, [b"after-%d" % n for n in range(500)])
        got = reader.wait_for(1000)
        assert got[500:] == [b"after-%d" % n for n in range(500)]
    finally:
        reader.close()
