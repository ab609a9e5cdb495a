"""The example configurations in config/ are accepted by what reads them."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cli.brokers.mosquitto import MAX_INFLIGHT, MAX_QUEUED, free_port
from edge.config import AgentConfig, load_config
from protocol.signing import Keyring
from tests.tls_helpers import write_tls_pair

EXAMPLES = Path(__file__).resolve().parent.parent / "config"
MOSQUITTO_EXAMPLE = EXAMPLES / "mosquitto.conf.example"


def test_agent_example_loads() -> None:
    config = load_config(EXAMPLES / "agent.example.toml")
    assert config.device.roles == ["speaker"]
    assert config.mqtt.tls is True
    assert config.mqtt.port == 8883
    assert config.mqtt.password_file == Path("/etc/xaso/mqtt.password")
    assert config.state.dir == Path("/var/lib/xaso")
    assert len(Keyring.from_mapping(config.trust.keys)) == 1


@pytest.mark.parametrize("section", ["speaker", "kiosk"])
def test_agent_example_documents_every_key_of_the_roles(section: str) -> None:
    """A key added to a role's section is added to the example too, set or commented."""
    text = (EXAMPLES / "agent.example.toml").read_text(encoding="utf-8")
    model = {f.name: f.type for f in msgspec.structs.fields(AgentConfig)}[section]
    for key in model.__struct_fields__:
        pattern = rf"^((# )?{key} = |\[\[{section}\.{key}\]\]$)"
        assert re.search(pattern, text, re.MULTILINE), f"[{section}] {key}"


def test_agent_example_kiosk_and_hall_speaker_sections_load() -> None:
    config = load_config(EXAMPLES / "agent.example.toml")
    assert config.speaker.calls_from == [] and config.speaker.call_max_age_s == 120
    assert [s.prefix for s in config.kiosk.services] == ["A", "B"]
    assert config.kiosk.counter_services == {"3": ["dat-dai"]}
    assert config.kiosk.buttons[0].service == "ho-tich"


def directives(text: str) -> list[tuple[str, str]]:
    lines = (line.strip() for line in text.splitlines())
    return [
        (parts[0], parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


def test_mosquitto_example_says_what_production_needs() -> None:
    found = directives(MOSQUITTO_EXAMPLE.read_text(encoding="utf-8"))
    settings = dict(found)
    assert ("listener", "8883") in found
    assert ("listener", "1883 127.0.0.1") in found
    assert settings["allow_anonymous"] == "false"
    assert settings["persistence"] == "true"
    # ingest's persistent session: the same limits as the brokers Xaso starts itself
    assert settings["max_queued_messages"] == str(MAX_QUEUED)
    assert settings["max_inflight_messages"] == str(MAX_INFLIGHT)
    assert settings["persistent_client_expiration"] == "30d"
    assert settings["message_size_limit"] == "262144"
    assert {"password_file", "acl_file", "certfile", "keyfile"} <= settings.keys()
    # The TLS files belong to the 8883 listener, not to the loopback one.
    keys = [key for key, _ in found]
    tls_listener = found.index(("listener", "8883"))
    assert tls_listener < keys.index("certfile") < found.index(("listener", "1883 127.0.0.1"))


@pytest.fixture
def example_broker(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """The example config on a real Mosquitto, with paths and ports moved into tmp_path."""
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto is not installed: ./xaso test installs it")
    cert, key = write_tls_pair(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "an-phu-loa-03", "s3cret"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=10,
    )
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwd), "an-phu-loa-04", "other"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=10,
    )
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite xaso/dev/%u/#\n")
    tls_port, plain_port = free_port(), free_port()
    text = MOSQUITTO_EXAMPLE.read_text(encoding="utf-8")
    for old, new in {
        "/etc/mosquitto/certs/xaso-broker.crt": str(cert),
        "/etc/mosquitto/certs/xaso-broker.key": str(key),
        "/etc/mosquitto/xaso.passwd": str(passwd),
        "/etc/mosquitto/xaso.acl": str(acl),
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "listener 8883": f"listener {tls_port}",
        "listener 1883 ": f"listener {plain_port} ",
        "log_dest syslog": "log_dest stdout",
    }.items():
        assert old in text
        text = text.replace(old, new)
    # As root, stay root: the files in tmp_path are not the mosquitto user's.
    text += f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", plain_port), timeout=1).close()
                break
            except OSError:
                if broker.poll() is not None or time.monotonic() > deadline:
                    output = broker.communicate(timeout=5)[0].decode(errors="replace")
                    pytest.fail(f"mosquitto did not start with the example:\n{output}")
                time.sleep(0.05)
        yield tls_port, plain_port, cert
    finally:
        broker.terminate()
        broker.communicate(timeout=10)


def connect(port: int, username: str | None, password: str | None, ca: Path | None = None) -> Any:
    """The broker's answer to a CONNECT: a paho reason code, or None if the link broke."""
    answered = threading.Event()
    answer: list[Any] = []

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        answer.append(code)
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{port}-{username}")
    client.on_connect = on_connect
    if username is not None:
        client.username_pw_set(username, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return None
    client.loop_start()
    answered.wait(5)
    client.disconnect()
    client.loop_stop()
    return answer[0] if answer else None


def test_mosquitto_example_runs_on_a_real_broker(example_broker: tuple[int, int, Path]) -> None:
    tls_port, plain_port, cert = example_broker
    assert not connect(plain_port, "an-phu-loa-03", "s3cret").is_failure
    assert not connect(tls_port, "an-phu-loa-03", "s3cret", ca=cert).is_failure
    assert connect(plain_port, None, None).is_failure  # no anonymous clients
    assert connect(plain_port, "an-phu-loa-03", "wrong").is_failure


def test_on_the_devices_listener_no_device_can_take_another_devices_client_id(
    example_broker: tuple[int, int, Path],
) -> None:
    """Issue 12: with a copied SD card, a device could connect under its neighbour's id
    and throw it off, again and again; the example binds the id to the username."""
    tls_port, _plain, cert = example_broker
    dropped = threading.Event()

    def client(username: str, password: str, client_id: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        c.username_pw_set(username, password)
        c.tls_set(ca_certs=str(cert))
        connected = threading.Event()
        c.on_connect = lambda *_: connected.set()
        c.connect("127.0.0.1", tls_port)
        c.loop_start()
        assert connected.wait(10)
        return c

    victim = client("an-phu-loa-03", "s3cret", "xaso-an-phu-loa-03")
    victim.on_disconnect = lambda *_: dropped.set()
    # The intruder has its CONNACK: a takeover would have closed the victim's
    # connection before it. The victim still gets what it sends itself.
    intruder = client("an-phu-loa-04", "other", "xaso-an-phu-loa-03")
    got = threading.Event()
    victim.on_message = lambda *_: got.set()
    victim.subscribe("xaso/dev/an-phu-loa-03/cmd", qos=1)
    deadline = time.monotonic() + 10
    while not got.is_set() and time.monotonic() < deadline:
        victim.publish("xaso/dev/an-phu-loa-03/cmd", b"still here", qos=1).wait_for_publish(5)
        got.wait(0.5)
    assert got.is_set() and not dropped.is_set()
    for c in (intruder, victim):
        c.disconnect()
        c.loop_stop()
