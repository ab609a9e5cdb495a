"""The agent against the embedded broker (amqtt) with the site's passwords and ACL.

The ``broker`` fixture here replaces conftest's Mosquitto, so conftest's
``fleet`` and ``probe`` run real agent processes against the embedded broker.
"Nothing arrives" is shown as in test_mosquitto_acl.py: an allowed message
sent after the forbidden one, on the same connection, has arrived first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cli.brokers.embedded import EmbeddedBroker, EmbeddedBrokerError, choose_broker
from cli.brokers.mosquitto import free_port
from cli.brokers.process import BrokerError
from controller.site.devices import add_device
from controller.site.directory import Site
from edge.config import load_config
from tests.conftest import DEVICES
from tests.mqtt_helpers import Clients, ConnectRefused


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def broker(tmp_path: Path, site: Site) -> Iterator[EmbeddedBroker]:
    port = free_port()
    for device, (roles, groups) in DEVICES.items():
        add_device(site.dir, device, roles, groups, broker_host="127.0.0.1", broker_port=port)
    embedded = EmbeddedBroker(
        tmp_path / "broker", port, password_file=site.passwd_path, acl_file=site.acl_path
    )
    embedded.start()
    yield embedded
    embedded.stop()


def device_login(site: Site, device: str) -> tuple[str, str]:
    config = load_config(site.device_config_path(device))
    return config.username, config.password()


def connack(
    broker: EmbeddedBroker,
    user: str,
    password: str,
    client: paho.Client | None = None,
    **will: str,
) -> str:
    """The broker's CONNACK reason for a client with an optional retained Will."""
    client = client or paho.Client(CallbackAPIVersion.VERSION2, client_id=f"c-{user}-{now_ms()}")
    client.username_pw_set(user, password)
    if will:
        client.will_set(will["topic"], will["payload"], qos=1, retain=True)
    reasons: list[str] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: reasons.append(str(reason))
    client.connect(broker.host, broker.port)
    while not reasons:
        client.loop(timeout=0.05)
    client.disconnect()
    return reasons[0]


# --- the agent's contract ----------------------------------------------------------------------


def test_online_then_kill9_sends_the_will_and_restart_comes_back(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    killed_at = now_ms()
    agent.kill9()
    status = probe.wait_for(
        lambda m: m.topic == "xaso/dev/loa-1/status" and m.json()["state"] == "offline"
    )
    assert status.json()["roles"] == ["speaker"]
    agent.start()
    probe.status_is("loa-1", "online", after=killed_at)
    late = fleet.probe()  # a newcomer reads the retained status
    late.wait_for(
        lambda m: (
            m.topic == "xaso/dev/loa-1/status"
            and m.retain
            and m.json()["state"] == "online"
            and m.json()["ts"] >= killed_at
        )
    )
    late.close()


def test_sigterm_says_offline_before_leaving(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    t = now_ms()
    assert agent.terminate() == 0
    probe.status_is("loa-1", "offline", after=t)


def test_signed_command_gets_its_ack(fleet, probe):
    fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    probe.publish(
        "xaso/dev/loa-1/cmd", fleet.seal("device.ping", {}, cmd_id="p1", to="xaso/dev/loa-1/cmd")
    )
    assert probe.ack_for("loa-1", "p1")["ok"]


def test_retained_document_reaches_an_agent_that_subscribes_later(fleet, probe):
    doc = fleet.seal(
        "config.set",
        {"version": 3, "telemetry_interval_s": 5},
        cmd_id="cfg-3",
        to="xaso/dev/loa-1/config",
    )
    probe.publish("xaso/dev/loa-1/config", doc, retain=True)
    fleet.spawn("loa-1")
    assert probe.ack_for("loa-1", "cfg-3")["ok"]


def test_command_sent_while_the_agent_is_away_is_queued_for_its_session(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    agent.kill9()
    probe.status_is("loa-1", "offline")
    probe.publish(
        "xaso/dev/loa-1/cmd",
        fleet.seal("device.ping", {}, cmd_id="queued", to="xaso/dev/loa-1/cmd"),
    )
    agent.start()
    assert probe.ack_for("loa-1", "queued")["ok"]


def test_a_refused_login_with_the_devices_client_id_leaves_its_session_alone(fleet, probe, broker):
    """amqtt alone wipes a clean session's namesake before checking the password."""
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    agent.kill9()
    probe.status_is("loa-1", "offline")
    probe.publish(
        "xaso/dev/loa-1/cmd",
        fleet.seal("device.ping", {}, cmd_id="queued", to="xaso/dev/loa-1/cmd"),
    )
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="xaso-loa-1", clean_session=True)
    assert connack(broker, "loa-1", "wrong", client=client) == "Not authorized"
    agent.start()
    assert probe.ack_for("loa-1", "queued")["ok"]


# --- passwords ---------------------------------------------------------------------------------


def test_wrong_unknown_and_missing_credentials_are_refused(site, broker):
    clients = Clients(broker.host, broker.port)
    user, password = device_login(site, "loa-1")
    try:
        clients.connect(user, password)
        for login in ((user, password + "x"), ("nobody", password), (None, None)):
            with pytest.raises(ConnectRefused):
                clients.connect(*login)
    finally:
        clients.close_all()


# --- the ACL -----------------------------------------------------------------------------------


def test_acl_holds_for_a_real_agent_identity(fleet, probe):
    """loa-2's credentials neither write under loa-1 nor read its commands."""
    fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    intruder = fleet.probe(as_device="loa-2", subscribe="xaso/dev/loa-1/#")
    intruder.client.publish(
        "xaso/dev/loa-1/status", b'{"state":"offline","ts":1}', qos=1, retain=True
    )
    intruder.publish("xaso/dev/loa-1/ack", b'{"cmd":"forged","ok":true}')
    intruder.publish("xaso/dev/loa-2/event", b'{"id":"marker","type":"agent.started","ts":1}')
    probe.wait_for(lambda m: m.topic == "xaso/dev/loa-2/event")
    probe.publish(
        "xaso/dev/loa-1/cmd", fleet.seal("device.ping", {}, cmd_id="mine", to="xaso/dev/loa-1/cmd")
    )
    probe.ack_for("loa-1", "mine")
    assert intruder.messages == []  # not the commands, not even the retained status
    assert [m for m in probe.on("xaso/dev/loa-1/status") if m.json()["ts"] == 1] == []
    assert [m for m in probe.on("xaso/dev/loa-1/ack") if m.json()["cmd"] == "forged"] == []
    intruder.close()


def test_a_newcomer_gets_only_the_retained_documents_it_may_read(fleet, probe):
    """amqtt alone hands every connecting client the retained messages of others' filters."""
    probe.publish("xaso/dev/loa-1/config", b"for loa-1", retain=True)
    probe.publish("xaso/dev/loa-2/config", b"for loa-2", retain=True)
    newcomer = fleet.probe(as_device="loa-2", subscribe="xaso/dev/loa-2/config")
    newcomer.wait_for(lambda m: m.payload == b"for loa-2")
    probe.publish("xaso/dev/loa-2/config", b"live")  # after whatever came at CONNECT
    newcomer.wait_for(lambda m: m.payload == b"live")
    got = [(m.topic, m.payload) for m in newcomer.messages]
    assert got == [("xaso/dev/loa-2/config", b"for loa-2"), ("xaso/dev/loa-2/config", b"live")]
    newcomer.close()


def test_a_will_on_another_devices_topic_is_refused(site, broker):
    user, password = device_login(site, "loa-2")
    forged = {"topic": "xaso/dev/loa-1/status", "payload": '{"state":"offline","ts":1}'}
    assert connack(broker, user, password, **forged) == "Not authorized"
    own = {"topic": "xaso/dev/loa-2/status", "payload": '{"state":"offline","ts":1}'}
    assert connack(broker, user, password, **own) == "Success"


# --- the runner --------------------------------------------------------------------------------


def test_a_taken_port_fails_with_the_log(tmp_path, site, broker):
    other = EmbeddedBroker(
        tmp_path / "other", broker.port, password_file=site.passwd_path, acl_file=site.acl_path
    )
    with pytest.raises(EmbeddedBrokerError, match="address already in use"):
        other.start()
    assert broker.running and not other.running


def test_a_missing_password_file_is_named(tmp_path, site):
    with pytest.raises(BrokerError, match=r"passwd\.away"):
        EmbeddedBroker(
            tmp_path / "b",
            password_file=site.passwd_path.with_suffix(".away"),
            acl_file=site.acl_path,
        ).start()


def test_restart_keeps_the_port(site, broker):
    port = broker.port
    broker.restart()
    assert broker.running and broker.port == port
    clients = Clients(broker.host, broker.port)
    clients.connect(*site.controller_credentials())
    clients.close_all()


@pytest.mark.parametrize(
    ("preference", "binary", "chosen"),
    [
        ("auto", "/usr/sbin/mosquitto", "mosquitto"),
        ("auto", None, "embedded"),
        ("mosquitto", "/usr/sbin/mosquitto", "mosquitto"),
        ("embedded", "/usr/sbin/mosquitto", "embedded"),
        ("embedded", None, "embedded"),
    ],
)
def test_choose_broker(preference, binary, chosen):
    assert choose_broker(preference, binary) == chosen


def test_choose_broker_refuses_what_cannot_run():
    with pytest.raises(ValueError, match="mosquitto not found"):
        choose_broker("mosquitto", None)
    with pytest.raises(ValueError, match="auto, mosquitto, embedded"):
        choose_broker("rabbitmq", None)
