"""Test harness: agents as real processes, and a controller-side MQTT probe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.systemd import unit_environment

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Probe:
    """Connects as the controller, records everything under the root, publishes and waits."""

    host: str
    port: int
    username: str
    password: str
    subscribe: str = "xaso/#"
    tls_ca: Path | None = None
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._connected = threading.Event()
        # A persistent session, as the controller's ingest has: the broker keeps what
        # arrives while the probe itself reconnects after a broker restart.
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{os.getpid()}-{id(self)}",
            clean_session=False,
        )
        c.username_pw_set(self.username, self.password)
        if self.tls_ca is not None:
            c.tls_set(ca_certs=str(self.tls_ca))
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = lambda *_: self._connected.clear()
        c.reconnect_delay_set(0.2, 1)
        self.client = c
        c.connect_async(self.host, self.port, keepalive=10)
        c.loop_start()
        if not self._connected.wait(60):  # a loaded machine, a Python broker
            raise TimeoutError("probe could not connect to the broker")

    def _on_connect(self, client, _ud, _flags, reason, _props):
        if not reason.is_failure:
            client.subscribe(self.subscribe, qos=1)
            self._connected.set()

    def _on_message(self, _c, _ud, msg):
        with self._cond:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    # the waits' defaults are generous: they return at the message, and a shared 2-core CI
    # machine under load can take tens of seconds to start an agent and hear from it
    def wait_for(self, pred: Callable[[Received], bool], timeout: float = 60.0) -> Received:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message within {timeout} s")
                self._cond.wait(left)

    def wait_until(self, check: Callable[[list[Received]], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met within {timeout} s")
                self._cond.wait(left)

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_on(self, topic: str, count: int, timeout: float = 60.0) -> list[Received]:
        """What came on ``topic`` once at least ``count`` messages have: the probe's own
        delivery lags the controller's return on a loaded machine."""
        self.wait_until(lambda ms: sum(m.topic == topic for m in ms) >= count, timeout)
        return self.on(topic)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        if not self._connected.wait(30):
            raise AssertionError("the probe is not connected to the broker")
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def ack_for(self, device: str, cmd_id: str, timeout: float = 60.0) -> dict[str, Any]:
        topic = f"xaso/dev/{device}/ack"
        msg = self.wait_for(lambda m: m.topic == topic and m.json().get("cmd") == cmd_id, timeout)
        return msg.json()  # type: ignore[no-any-return]

    def status_is(self, device: str, state: str, after: int = 0, timeout: float = 60.0) -> None:
        topic = f"xaso/dev/{device}/status"
        self.wait_for(
            lambda m: m.topic == topic and m.json()["state"] == state and m.json()["ts"] >= after,
            timeout,
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AgentProcess:
    """`xaso agent --config FILE` in its own process, with the environment systemd gives it."""

    def __init__(self, config: Path, log: Path, script: list[str] | None = None) -> None:
        self.config = config
        self.log = log
        self.argv = script or [sys.executable, "-m", "cli.main", "agent", "--config", str(config)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env={**os.environ, **unit_environment()},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")
