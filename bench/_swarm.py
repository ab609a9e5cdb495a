"""Many simulated agents in a few processes: the agent's protocol path, without its weight.

A whole agent is ~48 MiB and a process; 1,000 of them do not fit on a bench
machine. What the controller and the broker see is kept real: one MQTT
connection per device, made with that device's own credentials from its
generated configuration (`edge.config.load_config`), client id and persistent
session as the agent's, subscribed to the agent's topics (`device_inbound`),
so the broker's password file and ACL apply to every one. Each command goes
through the agent's own `Dispatcher` (signature, expiry, topic, replay guard in
the device's own SQLite `LocalStore`) and the ack is published on the device's
ack topic, serialised as the agent does.

Simulated: the speaker's handlers (a play is accepted as if its clip were
cached; nothing is fetched or played), telemetry, status and the outbox. The
agents of one worker share one thread and one selector loop instead of a
network thread and an inbound thread each.

A payload that starts with ``RAW_PREFIX`` is the baseline: the device answers
``b"echo:" + its run id`` on its ack topic at once, with no checks at all.
"""

from __future__ import annotations

import json
import resource
import select
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge import __version__
from edge.config import AgentConfig, load_config
from edge.dispatch import Dispatcher
from edge.store import LocalStore
from protocol.signing import Keyring
from protocol.topics import Topics
from protocol.uplink import uplink_json

ROOT = Path(__file__).resolve().parent.parent
RAW_PREFIX = b"RAW:"
MISC_EVERY_S = 1.0  # paho's keepalive bookkeeping, as its own loop does


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: each agent holds a socket, a socketpair
    (paho's) and three SQLite files; children (the broker) inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Stats:
    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.ns: Counter[str] = Counter()

    def add(self, what: str, ns: int) -> None:
        self.count[what] += 1
        self.ns[what] += ns


class SimAgent:
    """One device: its connection, its dispatcher and its store."""

    def __init__(self, config: AgentConfig, stats: _Stats, pending: set[SimAgent]) -> None:
        self.id = config.device.id
        self.config = config
        self.topics = Topics(config.mqtt.root)
        self.ack_topic = self.topics.ack(self.id)
        self.store = LocalStore(config.state.dir / "agent.sqlite3")
        self.dispatcher = Dispatcher(
            device_id=self.id,
            topics=self.topics,
            keyring=Keyring.from_mapping(config.trust.keys),
            store=self.store,
            now_ms=now_ms,
        )
        d = self.dispatcher
        # The speaker's handlers, minus the player: accepted as a cached clip would be.
        d.on_command("broadcast.play", lambda _o: {"queued": True, "cached": True})
        d.on_command("broadcast.stream", lambda _o: {"queued": True, "cached": False})
        d.on_command("broadcast.stop", lambda _o: None)
        d.on_command("device.ping", lambda _o: {"pong": now_ms(), "agent": __version__})
        self.subscribed = False
        self.lost = 0
        self._stats, self._pending = stats, pending
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=False,  # as the agent: the broker queues commands across an outage
        )
        c.username_pw_set(config.username, config.password())
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self.client = c

    def connect(self) -> socket.socket:
        mqtt = self.config.mqtt
        self.client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as edge/mqtt.py
        return sock

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            raise RuntimeError(f"the broker refused {self.id}: {reason}")
        topics = self.topics.device_inbound(self.id, self.config.device.groups)
        client.subscribe([(t, 1) for t in topics])
        self._pending.add(self)

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(code.is_failure for code in codes):
            raise RuntimeError(f"the broker refused a subscription of {self.id}: {codes}")
        self.subscribed = True

    def _on_disconnect(self, *_: Any) -> None:
        self.lost += 1

    def _on_message(self, client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        t0 = time.perf_counter_ns()
        if payload.startswith(RAW_PREFIX):
            reply = b"echo:" + payload[len(RAW_PREFIX) :].split(b":", 1)[0]
            kind = "echo"
        else:
            outcome = self.dispatcher.handle(msg.topic, payload)
            if outcome.ack is None:
                return
            reply = uplink_json(outcome.ack)  # as the agent
            kind = "ack" if outcome.ack.ok else f"refused:{outcome.ack.error}"
        t1 = time.perf_counter_ns()
        client.publish(self.ack_topic, reply, qos=1)
        self._stats.add(f"{kind}.handle", t1 - t0)
        self._stats.add(f"{kind}.publish", time.perf_counter_ns() - t1)
        self._pending.add(self)  # written once the read that brought it returns


def serve(config_paths: Sequence[str], control: BinaryIO, out: BinaryIO) -> None:
    """A worker: connect every agent, say "ready", answer commands until "stop" on ``control``."""
    raise_nofile()
    stats = _Stats()
    pending: set[SimAgent] = set()
    agents = [SimAgent(load_config(Path(p)), stats, pending) for p in config_paths]
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ, None)
    for agent in agents:
        sel.register(agent.connect(), selectors.EVENT_READ, agent)
    ready = False
    next_misc = time.monotonic() + MISC_EVERY_S
    while True:
        for key, _events in sel.select(timeout=MISC_EVERY_S):
            agent = key.data
            if agent is None:
                control.readline()  # "stop", or EOF: the bench is gone
                lost = sum(a.lost for a in agents)
                _say(out, {"count": stats.count, "ns": stats.ns, "lost": lost})
                for a in agents:
                    a.client.disconnect()
                    a.store.close()
                return
            rc = agent.client.loop_read()
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                raise RuntimeError(f"{agent.id} lost its connection: {paho.error_string(rc)}")
        while pending:  # PUBACKs, acks and subscriptions queued by the callbacks above
            agent = pending.pop()
            if agent.client.want_write():
                agent.client.loop_write()
        if time.monotonic() >= next_misc:
            for agent in agents:
                agent.client.loop_misc()
            next_misc = time.monotonic() + MISC_EVERY_S
        if not ready and all(a.subscribed for a in agents):
            _say(out, "ready")
            ready = True


def _say(out: BinaryIO, what: Any) -> None:
    out.write(json.dumps(what).encode() + b"\n")
    out.flush()


class Swarm:
    """The worker processes: `python -m bench._swarm CONFIG...`, each a share of the devices."""

    def __init__(self, config_paths: Sequence[Path], workers: int) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        for i in range(workers):
            argv = [sys.executable, "-m", "bench._swarm", *map(str, config_paths[i::workers])]
            self._procs.append(
                subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            )

    def _read(self, proc: subprocess.Popen[bytes], timeout_s: float) -> Any:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise TimeoutError(f"swarm worker {proc.pid}: no answer in {timeout_s} s (see stderr)")
        return json.loads(line)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for proc in self._procs:
            if self._read(proc, max(0.0, deadline - time.monotonic())) != "ready":
                raise RuntimeError(f"swarm worker {proc.pid}: unexpected answer")

    def stop(self) -> dict[str, Any]:
        """Stop the workers; their counters summed: messages and nanoseconds per step."""
        total: dict[str, Any] = {"count": Counter(), "ns": Counter(), "lost": 0}
        for proc in self._procs:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(b"stop\n")
                proc.stdin.flush()
                part = self._read(proc, 30)
                total["count"].update(part["count"])
                total["ns"].update(part["ns"])
                total["lost"] += part["lost"]
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return total


if __name__ == "__main__":
    serve(sys.argv[1:], sys.stdin.buffer, sys.stdout.buffer)
