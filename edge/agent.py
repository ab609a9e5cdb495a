"""The edge agent: one place that wires store, dispatcher, outbox and MQTT link.

Start order matters: the local store opens and the documents accepted before
are applied first, so a device with no network still does its work; the
network only brings new work and carries records home.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from edge import __version__
from edge.config import AgentConfig
from edge.dispatch import Dispatcher
from edge.health import SystemProbe
from edge.mqtt import LinkSettings, MqttLink, Will
from edge.outbox import Outbox
from edge.store import LocalStore
from plumbing.backoff import Backoff
from plumbing.clock import wall_ms
from protocol.commands import ConfigSet, DeviceVolume, Strict
from protocol.envelope import Opened
from protocol.events import AgentStarted, Body, new_event
from protocol.host import BrokerLogin
from protocol.receipts import Receipt
from protocol.signing import Keyring
from protocol.topics import Topics
from protocol.uplink import Event, Status, Telemetry, read_uplink, uplink_json

if TYPE_CHECKING:
    from protocol.host import CommandHandler, DocumentHandler

log = logging.getLogger(__name__)
INBOUND_QUEUE_MAX = 1000
# When commands arrive faster than they are handled, paho's thread waits this long
# for room (TCP then slows the broker, which applies its own limits) before a
# message is dropped. Short enough for keepalive; nothing here waits on paho.
INBOUND_BACKPRESSURE_S = 2.0


class Agent:
    """The host of a device's roles: implements ``protocol.host.RoleHost``."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        now_ms: Callable[[], int] = wall_ms,
        probe: SystemProbe | None = None,
    ) -> None:
        self.config = config
        self.device_id = config.device.id
        self.topics = Topics(config.mqtt.root)
        self.now_ms = now_ms  # the clock every role of this agent reads
        self._boot_ms = now_ms()
        self._instance = secrets.token_hex(8)  # this run, told apart from a clone's
        self._started_mono = time.monotonic()
        self._probe = probe or SystemProbe(
            thermal_zone=config.telemetry.thermal_zone, disk_path=config.state.dir
        )
        self.store = LocalStore(config.state.dir / "agent.sqlite3")
        self.dispatcher = Dispatcher(
            device_id=self.device_id,
            topics=self.topics,
            keyring=Keyring.from_mapping(config.trust.keys),
            store=self.store,
            now_ms=now_ms,
        )
        self._groups: list[str] = list(config.device.groups)
        self.config_doc: ConfigSet | None = None
        self.telemetry_interval_s = config.telemetry.interval_s
        self._inbound: queue.Queue[tuple[str, bytes]] = queue.Queue(INBOUND_QUEUE_MAX)
        self._stop = threading.Event()
        self.restart_requested = threading.Event()
        self._threads: list[threading.Thread] = []
        self._telemetry_wake = threading.Event()
        # the roles (speaker, kiosk) hook in here; see broadcast.speaker
        self._config_listeners: list[Callable[[ConfigSet], None]] = []
        self._volume_listeners: list[Callable[[int], None]] = []
        self._telemetry_parts: list[Callable[[], dict[str, Any]]] = []
        self._closers: list[Callable[[], None]] = []
        self._starters: list[Callable[[], None]] = []
        self._health: list[Callable[[], bool]] = []
        # uplink topics of other devices this one reads (a hall speaker: its kiosks' calls)
        self._listeners: dict[str, Callable[[bytes], None]] = {}

        self.link = MqttLink(
            LinkSettings(
                host=config.mqtt.host,
                port=config.mqtt.port,
                client_id=config.client_id,
                username=config.username,
                password=config.password(),
                keepalive_s=config.mqtt.keepalive_s,
                tls=config.mqtt.tls,
                ca_file=config.mqtt.ca_file,
                bind_address=config.mqtt.bind_address,
                takeover_stable_s=config.mqtt.takeover_stable_s,
                takeover_hold_s=config.mqtt.takeover_hold_s,
                takeover_hold_max_s=config.mqtt.takeover_hold_max_s,
            ),
            Backoff(config.mqtt.reconnect_min_s, config.mqtt.reconnect_max_s),
            will=Will(self.topics.status(self.device_id), self._status("offline")),
            subscriptions=self.inbound_topics,
            on_connected=self._connected,
            on_disconnected=self._disconnected,
            on_message=self._received,
            on_published=self._published,
        )
        mqtt = config.mqtt
        self.outbox = Outbox(
            self.store,
            self.link.publish,
            now_ms,
            receipts=mqtt.receipts,
            receipt_timeout_s=mqtt.receipt_timeout_s,
            receipt_timeout_max_s=mqtt.receipt_timeout_max_s,
        )
        if mqtt.receipts:
            self.listen(self.topics.receipt(self.device_id), self._receipt)
        # its own retained status, to see another run of this identity (docs/broker-security.md)
        self.listen(self.topics.status(self.device_id), self._own_status)
        self._register_builtin_handlers()

    # wiring for features (broadcast, kiosk) and the built-in commands

    def _register_builtin_handlers(self) -> None:
        d = self.dispatcher
        d.on_command("device.ping", lambda o: {"pong": self.now_ms(), "agent": __version__})
        d.on_command("device.volume", self._set_volume)
        d.on_command("device.restart_agent", self._restart)
        d.on_document("config.set", self._apply_config)

    def on_config(self, listener: Callable[[ConfigSet], None]) -> None:
        self._config_listeners.append(listener)

    def on_volume(self, listener: Callable[[int], None]) -> None:
        self._volume_listeners.append(listener)

    def add_telemetry(self, part: Callable[[], dict[str, Any]]) -> None:
        self._telemetry_parts.append(part)

    def on_start(self, starter: Callable[[], None]) -> None:
        """Run after the stored documents are applied, before the network starts."""
        self._starters.append(starter)

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def add_health(self, check: Callable[[], bool]) -> None:
        """A role's own threads: the watchdog is pinged only while ``check()`` is true."""
        self._health.append(check)

    def on_command(self, msg_type: str, handler: CommandHandler) -> None:
        self.dispatcher.on_command(msg_type, handler)

    def on_document(self, msg_type: str, handler: DocumentHandler) -> None:
        self.dispatcher.on_document(msg_type, handler)

    @property
    def state_dir(self) -> Path:
        return self.config.state.dir

    def http_credentials(self) -> tuple[str, str | None]:
        return self.config.username, self.config.password()

    def broker_login(self) -> BrokerLogin:
        mqtt = self.config.mqtt
        return BrokerLogin(
            mqtt.host, mqtt.port, mqtt.tls, mqtt.ca_file, self.config.username,
            self.config.password(),
        )  # fmt: skip

    def setting(self, name: str) -> str | None:
        return self.store.setting(name)

    def set_setting(self, name: str, value: str) -> None:
        self.store.set_setting(name, value)

    def remember_once(self, key: str, until_ms: int) -> bool:
        return self.store.remember_command(key, until_ms)

    def send(self, topic: str, payload: bytes) -> None:
        self.outbox.put(topic, payload, qos=1)

    def listen(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe to an unsigned topic the broker's ACL lets this device read; its
        messages go to ``handler`` on the inbound worker, never to the dispatcher."""
        self._listeners[topic] = handler

    @property
    def volume_pct(self) -> int:
        stored = self.store.setting("volume_pct")
        return int(stored) if stored is not None else 100

    def _store_volume(self, pct: int) -> None:
        self.store.set_setting("volume_pct", str(pct))
        for listener in self._volume_listeners:
            listener(pct)

    def _set_volume(self, opened: Opened) -> dict[str, Any]:
        body = opened.body
        assert isinstance(body, DeviceVolume)
        self._store_volume(body.volume_pct)
        return {"volume_pct": body.volume_pct}

    def _restart(self, _opened: Opened) -> None:
        self.restart_requested.set()
        self._stop.set()

    def _apply_config(self, _topic: str, body: Strict) -> None:
        assert isinstance(body, ConfigSet)
        before = set(self.inbound_topics())
        self.config_doc = body
        if body.groups:
            self._groups = list(body.groups)
        self.telemetry_interval_s = float(body.telemetry_interval_s)
        self._store_volume(body.volume_pct)
        for listener in self._config_listeners:
            listener(body)
        after = set(self.inbound_topics())
        if self.link.connected and before != after:
            self.link.change_subscriptions(sorted(after - before), sorted(before - after))
        self._telemetry_wake.set()

    def inbound_topics(self) -> list[str]:
        return self.topics.device_inbound(self.device_id, self._groups) + list(self._listeners)

    # records

    def emit(self, body: Body) -> Event:
        """Record an event durably; it reaches the controller when the network allows."""
        event = new_event(body, self.now_ms())
        self.outbox.put(
            self.topics.event(self.device_id), uplink_json(event), qos=1, event_id=event.id
        )
        return event

    def _receipt(self, payload: bytes) -> None:
        """The controller stored these events: their outbox rows go."""
        try:
            receipt = msgspec.json.decode(payload, type=Receipt)
        except msgspec.DecodeError as exc:  # not JSON, or not a receipt
            self.dispatcher.refused["bad_receipt"] += 1
            log.warning("ignored a receipt that does not fit: %s", str(exc).splitlines()[0])
            return
        self.outbox.receipted(receipt.ids)

    def _own_status(self, payload: bytes) -> None:
        """The device's status by another run: on a reconnect, a clone's doing. (What the
        first connection finds may be this card's previous run.)"""
        try:
            status = read_uplink(payload, Status)
        except msgspec.DecodeError:
            return
        if not status.instance or status.instance == self._instance or self.link.connections < 2:
            return
        self.link.takeover.evidence(time.monotonic())
        log.warning(
            "another run of this device's identity (from %s) came online while this one was "
            "away: two devices seem to share one identity (a cloned SD card?)",
            ", ".join(status.addresses) or "an unknown address",
        )

    def _versions(self) -> dict[str, int]:
        return {doc.topic: doc.version for doc in self.store.documents()}

    def _status(self, state: str, *, connected: bool = False) -> bytes:
        """Also where this run connects from, when ``connected`` (not in the Will)."""
        address = self.link.local_address() if connected else None
        addresses = [address] if address else []
        thrown_off = self.link.takeover.suspected if connected else 0
        versions = self._versions()
        own = f"{self.topics.root}/dev/{self.device_id}/"
        return uplink_json(
            Status(
                state=state,  # type: ignore[arg-type]
                ts=self.now_ms(),
                agent=__version__,
                roles=self.config.device.roles,
                boot=self._boot_ms,
                config_version=versions.get(own + "config", 0),
                schedule_version=versions.get(own + "schedule", 0),
                documents=versions,
                instance=self._instance,
                addresses=addresses,
                thrown_off=thrown_off,
            )
        )

    def telemetry(self) -> Telemetry:
        versions = self._versions()
        own = f"{self.topics.root}/dev/{self.device_id}/"
        parts: dict[str, Any] = {}
        for part in self._telemetry_parts:
            parts.update(part())
        return msgspec.convert(
            {
                **self._probe.sample(),
                **parts,
                "ts": self.now_ms(),
                "agent_uptime_s": round(time.monotonic() - self._started_mono, 1),
                "config_version": versions.get(own + "config", 0),
                "schedule_version": versions.get(own + "schedule", 0),
                "documents": versions,
                "outbox_len": self.store.outbox_len(),
                "outbox_awaiting": self.store.outbox_awaiting(),
                "outbox_resent": self.outbox.resent,
                "refused": dict(self.dispatcher.refused),
                "volume_pct": self.volume_pct,
                "agent": __version__,
            },
            Telemetry,
        )

    # MQTT callbacks (network thread: hand off, never block)

    def _connected(self) -> None:
        self.link.publish(
            self.topics.status(self.device_id), self._status("online", connected=True), 1, True
        )
        self.outbox.connected()
        self._telemetry_wake.set()

    def _disconnected(self) -> None:
        self.outbox.disconnected()

    def _received(self, topic: str, payload: bytes) -> None:
        try:
            self._inbound.put((topic, payload), timeout=INBOUND_BACKPRESSURE_S)
        except queue.Full:
            self.dispatcher.refused["overload"] += 1
            log.warning(
                "inbound queue full for %.0f s: dropped a message on %s",
                INBOUND_BACKPRESSURE_S,
                topic,
            )

    def _published(self, mid: int) -> None:
        self.outbox.published(mid)

    # threads

    def _inbound_worker(self) -> None:
        while not self._stop.is_set():
            try:
                topic, payload = self._inbound.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                listener = self._listeners.get(topic)
                if listener is not None:
                    listener(payload)
                    continue
                outcome = self.dispatcher.handle(topic, payload)
                if outcome.ack is not None:
                    self.link.publish(self.topics.ack(self.device_id), uplink_json(outcome.ack), 1)
            except Exception:
                log.exception("unexpected error handling a message on %s", topic)

    def _telemetry_worker(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            try:
                if self.link.connected:
                    payload = uplink_json(self.telemetry())
                    self.link.publish(self.topics.telemetry(self.device_id), payload, 0)
                if time.monotonic() >= next_prune:
                    self.store.forget_commands_before(self.now_ms())
                    next_prune = time.monotonic() + 3600
            except Exception:
                log.exception("telemetry failed; trying again next interval")
            self._telemetry_wake.wait(self.telemetry_interval_s)
            self._telemetry_wake.clear()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start(self) -> None:
        restored = self.dispatcher.restore_documents()
        log.info("agent %s starting; %d stored document(s) applied", self.device_id, restored)
        for starter in self._starters:
            starter()
        self.emit(AgentStarted(agent=__version__, boot=self._boot_ms))
        self.outbox.start()
        self._spawn(self._inbound_worker, "inbound")
        self._spawn(self._telemetry_worker, "telemetry")
        self.link.start()

    @property
    def healthy(self) -> bool:
        """For the systemd watchdog: every worker thread still runs, the roles' included."""
        return (
            self.outbox.alive
            and all(t.is_alive() for t in self._threads)
            and all(check() for check in self._health)
        )

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._stop.wait(timeout_s)

    def request_stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Clean shutdown: the roles stop first (nothing new starts playing), then the
        retained offline status, then the rest."""
        self._stop.set()
        self._telemetry_wake.set()
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                log.exception("error while closing")
        self.link.close(Will(self.topics.status(self.device_id), self._status("offline")))
        for thread in self._threads:
            thread.join(timeout=5)
        self.outbox.stop()
        self.store.close()
