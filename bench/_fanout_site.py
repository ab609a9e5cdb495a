"""The emergency fan-out bench's site, instrumented: one round of each path, timed.

bench/emergency_fanout.py runs the rounds and reports them; what is timed,
and where, is described there and in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import event
from sqlalchemy.orm import Session

from bench._swarm import RAW_PREFIX, Swarm
from cli.brokers.mosquitto import Mosquitto, free_port
from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.fleet.ingest_writes import AckHook
from controller.settings import parse_settings
from controller.site.devices import add_device
from controller.site.keys import init_site
from protocol.topics import Topics
from protocol.uplink import Ack

GROUP = "bench-all"
ROUND_TIMEOUT_S = 120.0


Seen = tuple[int, str, bytes]  # perf_counter_ns, topic, payload
Recorded = tuple[int, str, str | None]  # perf_counter_ns of the commit, device, command id


class AckTap:
    """Two moments of each ack at the controller: paho hands it to the Bus (``arrived``), and
    the ingest batch that recorded it in the broadcast's table commits (``recorded``); and
    what ``record_acks_in`` cost each batch (``batches``: acks, ns)."""

    def __init__(self, record: AckHook) -> None:
        self.record = record
        self._lock = threading.Lock()
        self._arrived: list[Seen] = []
        self._recorded: list[Recorded] = []
        self._batches: list[tuple[int, int]] = []

    def on_paho(self, on_message: Callable[..., None]) -> Callable[..., None]:
        """Wrap the Bus's paho callback (its network thread): the arrival, before its queue."""

        def tapped(client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
            self._arrived.append((time.perf_counter_ns(), msg.topic, bytes(msg.payload)))
            on_message(client, userdata, msg)

        return tapped

    def __call__(self, session: Session, acks: list[tuple[str, Ack]]) -> None:
        t0 = time.perf_counter_ns()
        self.record(session, acks)
        took = time.perf_counter_ns() - t0

        def committed(_session: Session) -> None:
            now = time.perf_counter_ns()
            with self._lock:
                self._recorded.extend((now, device, ack.cmd) for device, ack in acks)
                self._batches.append((len(acks), took))

        event.listen(session, "after_commit", committed, once=True)

    def take(
        self, timeout_s: float, *, arrived: int = 0, recorded: int = 0
    ) -> tuple[list[Seen], list[Recorded], list[tuple[int, int]]]:
        """What was seen since the last take, once that many arrived and were recorded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (
            len(self._arrived) < arrived or len(self._recorded) < recorded
        ):
            time.sleep(0.002)
        with self._lock:
            taken = self._arrived, self._recorded, self._batches
            self._arrived, self._recorded, self._batches = [], [], []
        return taken


class SizeTap:
    """The station's publisher, noting the size of what it sends (the signed envelope) and
    when it is asked to (perf_counter_ns): the end of the controller's part before the wire."""

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self.size = 0
        self.at_ns = 0

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        self.at_ns = time.perf_counter_ns()
        self.size = len(payload)
        self.publisher.publish(topic, payload, **kw)


@dataclass
class Round:
    """Per device, ms from just before the call to each moment of its answer."""

    bus_ms: dict[str, float]  # handed to the controller's Bus by paho
    recorded_ms: dict[str, float]  # its batch committed (the echo: never, it is no Ack)
    call_ms: float  # the API call (or the raw publish's PUBACK) returned
    batches: list[tuple[int, int]]  # acks and ns in record_acks_in, per ingest batch
    publish_ms: float = 0.0  # the command handed to the Bus's publish (raw: the start)

    def after_publish(self, got: dict[str, float]) -> list[float]:
        """ms from the publish to each answer."""
        return [v - self.publish_ms for v in got.values()]


class Bench:
    """Everything one run needs, in one temp dir; ``close`` stops it all."""

    def __init__(self, devices: int, workers: int, tmp: Path) -> None:
        self.tmp = tmp
        self.n = devices
        port = free_port()
        site = init_site(tmp / "site")
        self.ids = [f"spk-{i:04d}" for i in range(devices)]
        t0 = time.perf_counter()
        for device in self.ids:
            add_device(
                site.dir,
                device,
                ["speaker"],
                [GROUP],
                broker_host="127.0.0.1",
                broker_port=port,
                state_dir=tmp / "state" / device,
            )
        self.provision_s = time.perf_counter() - t0
        self.site = site
        self.topics = Topics(site.root)
        self.broker = Mosquitto(
            tmp / "broker", port, password_file=site.passwd_path, acl_file=site.acl_path
        )
        self.swarm: Swarm | None = None
        self.server: uvicorn.Server | None = None
        self.raw: paho.Client | None = None
        self.broker.start()
        try:
            t0 = time.perf_counter()
            self.swarm = Swarm([site.device_config_path(d) for d in self.ids], workers)
            self.swarm.wait_ready(300)
            self.swarm_s = time.perf_counter() - t0
            self._start_controller(port)
            self.raw = self._raw_client()
        except BaseException:
            self.close()
            raise

    def _start_controller(self, mqtt_port: int) -> None:
        http_port = free_port()
        config = self.tmp / "controller.toml"
        data = {
            "site": {"dir": str(self.site.dir), "clips_dir": str(self.tmp / "clips")},
            "http": {"host": "127.0.0.1", "port": http_port},
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        }
        app = create_app(parse_settings(data, config))
        # The raw echo is not an Ack: ingest counts it as a bad message and logs the first 20.
        logging.getLogger("controller.fleet.ingest").setLevel(logging.ERROR)
        state = app.state.xaso
        self.station = state.station
        self.tap = AckTap(self.station.broadcasting.record_acks_in)
        self.sent = SizeTap(self.station.broadcasting.publisher)
        self.station.broadcasting.publisher = self.sent
        # the station hands this attribute to its ingest when its bus connects, below
        self.station.broadcasting.record_acks_in = self.tap
        self.token = self._api_token(state)
        self.clip = self._clip()
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{http_port}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=ROUND_TIMEOUT_S,
        )
        cfg = uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not (self.server.started and self.station.connected):
            if time.monotonic() > deadline:
                raise TimeoutError("the controller did not start or reach the broker in 30 s")
            time.sleep(0.02)
        client = self.station.bus._client  # instrumentation only: no public hook at this point
        client.on_message = self.tap.on_paho(client.on_message)

    def _api_token(self, state: Any) -> str:
        """A broadcaster and an API token of theirs, as an integration would hold."""
        now = time.time_ns() // 1_000_000
        with state.sessions() as db:
            user = create_user(
                db,
                state.auth.passwords,
                username="bench",
                display_name="Bench",
                role="broadcaster",
                password=uuid.uuid4().hex,
                now_ms=now,
            )
            role = Role.BROADCASTER
            owner = Principal("user", user.id, user.username, user.display_name, role,
                              PERMISSIONS[role])  # fmt: skip
            token, _row = create_token(db, owner, "bench", role.value, now)
            db.commit()
        return token

    def _clip(self) -> str:
        """A one-second tone through the clip library (ffmpeg prepares it)."""
        path = self.tmp / "tone.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            tone = (int(8000 * math.sin(2 * math.pi * 440 * i / 16_000)) for i in range(16_000))
            out.writeframes(b"".join(v.to_bytes(2, "little", signed=True) for v in tone))
        info = self.station.library.upload(path, title="Bench tone", created_by="bench")
        sha: str = info.sha256
        return sha

    def _raw_client(self) -> paho.Client:
        user, password = self.site.controller_credentials()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{os.getpid()}")
        c.username_pw_set(user, password)
        c.connect(self.broker.host, self.broker.port, keepalive=30)
        sock = c.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the Bus does
        c.loop_start()
        return c

    def emergency(self) -> tuple[Round, int]:
        """One emergency through the API; also the size of the signed envelope."""
        body = {"targets": [{"kind": "group", "id": GROUP}], "clip_sha256": self.clip,
                "label": "bench", "confirm": True}  # fmt: skip
        t0 = time.perf_counter_ns()
        resp = self.http.post("/api/broadcasts/emergency", json=body)
        call_ms = (time.perf_counter_ns() - t0) / 1e6
        if resp.status_code != 201:
            raise RuntimeError(f"the API refused the emergency: {resp.status_code} {resp.text}")
        bid = resp.json()["id"]
        arrived, recorded, batches = self.tap.take(ROUND_TIMEOUT_S, recorded=self.n)
        mine = bid.encode()
        for payload in {p for _t, _topic, p in arrived if mine in p}:
            if not json.loads(payload)["ok"]:
                raise RuntimeError(f"a device refused {bid}: {payload!r}")
        status = self.http.get(f"/api/broadcasts/{bid}").json()["status"]
        if status != "acked":
            raise RuntimeError(f"broadcast {bid} is {status!r} at the controller, not 'acked'")
        bus = self._per_device(arrived, t0, lambda p: mine in p)
        done = self._complete({d: (ns - t0) / 1e6 for ns, d, cmd in recorded if cmd == bid})
        published = (self.sent.at_ns - t0) / 1e6
        return Round(bus, done, call_ms, batches, published), self.sent.size

    def _per_device(
        self, seen: list[Seen], t0: int, match: Callable[[bytes], bool]
    ) -> dict[str, float]:
        return self._complete(
            {self.topics.parse(t).id: (ns - t0) / 1e6 for ns, t, p in seen if match(p)}
        )

    def _complete(self, got: dict[str, float]) -> dict[str, float]:
        if len(got) != self.n:
            missing = sorted(set(self.ids) - set(got))
            raise RuntimeError(f"{len(missing)} of {self.n} never answered: {missing[:5]}")
        return got

    def raw_round(self, size: int) -> Round:
        """The same fan-out with no API, no signature and no checks: publish, echo."""
        rid = uuid.uuid4().hex
        head = RAW_PREFIX + rid.encode() + b":"
        payload = head + b"x" * max(0, size - len(head))
        assert self.raw is not None
        t0 = time.perf_counter_ns()
        info = self.raw.publish(self.topics.grp(GROUP, "cmd"), payload, qos=1)
        info.wait_for_publish(ROUND_TIMEOUT_S)
        call_ms = (time.perf_counter_ns() - t0) / 1e6
        arrived, _recorded, _batches = self.tap.take(ROUND_TIMEOUT_S, arrived=self.n)
        expect = b"echo:" + rid.encode()
        return Round(self._per_device(arrived, t0, lambda p: p == expect), {}, call_ms, [])

    def close(self) -> dict[str, Any]:
        """Stop everything that started; the workers' counters."""
        stats: dict[str, Any] = {}
        try:
            if self.swarm is not None:
                stats = self.swarm.stop()
            if self.raw is not None:
                self.raw.disconnect()
                self.raw.loop_stop()
            if self.server is not None:
                logging.getLogger("controller.bus").setLevel(logging.ERROR)  # "disconnected"
                self.http.close()
                self.server.should_exit = True
                self._thread.join(15)
        finally:
            self.broker.stop()
        return stats
