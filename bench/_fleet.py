"""Bench scaffolding: a throwaway site, a private Mosquitto, agents as real processes.

Everything lives in one temp dir and goes with it, so a bench never touches the
machine's shared broker on 1883 or /var/lib/xaso. The helpers are deliberately
thin: the benches should measure the project's code, not their own.
"""

from __future__ import annotations

import json
import os
import queue
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cli.brokers.mosquitto import Mosquitto, free_port
from controller.site.devices import add_device
from controller.site.keys import init_site
from edge.systemd import unit_environment

ROOT = Path(__file__).resolve().parent.parent

# A bare paho client for the same-run baselines: connect, then run the caller's body.
# The body must print "ready" (flushed) once the client is usable.
_PAHO_SCRIPT = """
import os, sys
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
host, port, user, password, *args = sys.argv[1:]
c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{{os.getpid()}}")
c.username_pw_set(user, password)
{body}
c.connect(host, int(port), keepalive=30)
import socket  # as our own clients do: no Nagle delay on small packets
c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.loop_forever()
"""


class Controller:
    """The controller's side: one paho client whose messages queue up in ``inbox``."""

    def __init__(
        self, host: str, port: int, user: str, password: str, topics: Sequence[str]
    ) -> None:
        self.inbox: queue.SimpleQueue[paho.MQTTMessage] = queue.SimpleQueue()
        subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-controller-{os.getpid()}")
        c.username_pw_set(user, password)
        c.on_connect = lambda cl, _u, _f, reason, _p: (
            None if reason.is_failure else cl.subscribe([(t, 1) for t in topics])
        )
        c.on_subscribe = lambda *_: subscribed.set()
        c.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        c.connect(host, port, keepalive=30)
        # The measuring client sends its PUBACK for one reply just before the next
        # command: with Nagle on, that command would wait for a delayed ACK (~40 ms).
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.loop_start()
        self.client = c
        if not subscribed.wait(10):
            raise TimeoutError(f"the controller client could not subscribe at {host}:{port}")

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def wait_for(
        self, match: Callable[[paho.MQTTMessage], bool], timeout_s: float = 10.0
    ) -> paho.MQTTMessage:
        """The next queued message that matches; others are dropped."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                msg = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no matching message within {timeout_s} s") from None
            if match(msg):
                return msg

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class BenchSite:
    """A provisioned site with ``devices`` (speakers, default 30 s telemetry) and its broker."""

    def __init__(self, devices: Sequence[str] = ("bench-1",)) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="xaso-bench-")
        self.dir = Path(self._tmp.name)
        port = free_port()
        self.site = init_site(self.dir / "site")
        for device in devices:
            add_device(
                self.site.dir,
                device,
                ["speaker"],
                broker_host="127.0.0.1",
                broker_port=port,
                state_dir=self.dir / "state" / device,
            )
        self.broker = Mosquitto(
            self.dir / "broker",
            port,
            password_file=self.site.passwd_path,
            acl_file=self.site.acl_path,
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.clients: list[Controller] = []

    def __enter__(self) -> BenchSite:
        self.broker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in self.clients:
            client.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: the agent publishes "offline" and closes its store
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.broker.stop()
        self._tmp.cleanup()

    def credentials(self) -> tuple[str, str]:
        return self.site.controller_credentials()

    def controller(self, topics: Sequence[str]) -> Controller:
        client = Controller(self.broker.host, self.broker.port, *self.credentials(), topics)
        self.clients.append(client)
        return client

    def agent_log(self, device: str) -> Path:
        return self.dir / f"{device}.log"

    def spawn_agent(self, device: str) -> subprocess.Popen[bytes]:
        """`python -m cli.main agent --config FILE` with the environment systemd gives it."""
        config = str(self.site.device_config_path(device))
        argv = [sys.executable, "-m", "cli.main", "agent", "--config", config]
        with self.agent_log(device).open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **unit_environment()},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def spawn_paho(self, body: str, *args: str, timeout_s: float = 10) -> subprocess.Popen[bytes]:
        """A bare paho client in its own process, as the controller; returns once it is ready."""
        code = _PAHO_SCRIPT.format(body=body)
        argv = [sys.executable, "-c", code, self.broker.host, str(self.broker.port)]
        argv += [*self.credentials(), *args]
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise TimeoutError(f"the paho helper was not ready within {timeout_s} s")
        return proc

    def wait_online(self, controller: Controller, device: str, timeout_s: float = 30) -> None:
        """Until the agent's status is online (the controller must subscribe to it)."""
        topic = f"{self.site.root}/dev/{device}/status"
        try:
            controller.wait_for(
                lambda m: m.topic == topic and json.loads(m.payload)["state"] == "online",
                timeout_s,
            )
        except TimeoutError:
            tail = self.agent_log(device).read_text(errors="replace")[-2000:]
            raise TimeoutError(f"agent {device} never came online; its log:\n{tail}") from None
