"""The controller's view of the fleet over MQTT: latest status, telemetry, acks.

A small, real client of the contract that narrates the demo on its console
(devices coming and going, events, pings); the controller's own view is its
database, fed by ingest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import paho.mqtt.client as paho

from plumbing.clock import wall_ms
from plumbing.mqtt_client import guarded, new_client
from protocol.envelope import seal
from protocol.signing import SigningKey
from protocol.topics import Topics
from protocol.uplink import Ack, Event, Status, Telemetry

log = logging.getLogger(__name__)


@dataclass
class DeviceView:
    id: str
    status: Status | None = None
    telemetry: Telemetry | None = None
    events: int = 0
    last_ack: Ack | None = None
    seen_ms: int = 0


@dataclass
class AckWaiter:
    """Set when the device's ack arrives; ``at`` is when (monotonic seconds)."""

    done: threading.Event = field(default_factory=threading.Event)
    at: float = 0.0
    ack: Ack | None = None


@dataclass
class FleetView:
    host: str
    port: int
    username: str
    password: str
    key: SigningKey
    topics: Topics = field(default_factory=Topics)
    on_change: Callable[[str, str], None] = lambda device, what: None
    on_event: Callable[[str, Event], None] = lambda device, event: None

    def __post_init__(self) -> None:
        self.devices: dict[str, DeviceView] = {}
        self.event_ids: set[str] = set()
        self._lock = threading.Lock()
        self._acks: dict[str, AckWaiter] = {}
        self._connected = threading.Event()
        client = new_client(
            f"xaso-view-{id(self)}", self.username, self.password, clean_session=True
        )
        client.on_connect = guarded(self._on_connect)
        client.on_message = self._on_message
        self._client = client

    def start(self, timeout_s: float = 10) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            raise TimeoutError(f"cannot connect to the broker at {self.host}:{self.port}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("the broker refused the controller: %s", reason)
            return
        for leaf in ("status", "telemetry", "event", "ack"):
            client.subscribe(self.topics.all_devices(leaf), qos=1)
        self._connected.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            ref = self.topics.parse(msg.topic)
            self._ingest(ref.id, ref.leaf, json.loads(msg.payload))
        except Exception as exc:  # a bad message must never kill paho's thread
            log.warning("ignored a message on %s: %s", msg.topic, exc)

    def _ingest(self, device: str, leaf: str, doc: Any) -> None:
        now = wall_ms()
        with self._lock:
            view = self.devices.setdefault(device, DeviceView(device))
            view.seen_ms = now
            if leaf == "status":
                before = view.status.state if view.status else None
                view.status = msgspec.convert(doc, Status, strict=False)
                if view.status.state != before:
                    self.on_change(device, view.status.state)
            elif leaf == "telemetry":
                view.telemetry = msgspec.convert(doc, Telemetry, strict=False)
            elif leaf == "event":
                event = msgspec.convert(doc, Event, strict=False)
                if event.id not in self.event_ids:  # stored once, however often delivered
                    self.event_ids.add(event.id)
                    view.events += 1
                    self.on_event(device, event)
            elif leaf == "ack":
                view.last_ack = msgspec.convert(doc, Ack, strict=False)
                waiter = self._acks.pop(f"{device}/{view.last_ack.cmd}", None)
                if waiter is not None:
                    waiter.at, waiter.ack = time.monotonic(), view.last_ack
                    waiter.done.set()

    def send(
        self,
        topic: str,
        msg_type: str,
        body: dict[str, Any],
        *,
        retain: bool = False,
        cmd_id: str | None = None,
    ) -> str:
        """Sign and publish; returns the command id."""
        payload = seal(msg_type, body, self.key, wall_ms(), to=topic, cmd_id=cmd_id)
        sent_id: str = json.loads(payload)["id"]
        self._client.publish(topic, payload, qos=1, retain=retain)
        return sent_id

    def expect_ack(self, device: str, cmd_id: str) -> AckWaiter:
        """Register before the command can be answered (see ``send(..., cmd_id=)``)."""
        waiter = AckWaiter()
        with self._lock:
            self._acks[f"{device}/{cmd_id}"] = waiter
        return waiter

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = []
            for view in sorted(self.devices.values(), key=lambda v: v.id):
                t = view.telemetry
                rows.append(
                    {
                        "id": view.id,
                        "state": view.status.state if view.status else "unknown",
                        "roles": view.status.roles if view.status else [],
                        "seen_ms": view.seen_ms,
                        "cpu_temp_c": t.cpu_temp_c if t else None,
                        "disk_free_mb": t.disk_free_mb if t else None,
                        "outbox_len": t.outbox_len if t else None,
                        "clock_synced": t.clock.synced if t else None,
                        "events": view.events,
                    }
                )
            return rows
