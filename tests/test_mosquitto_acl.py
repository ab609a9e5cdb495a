"""The generated password and ACL files on a real Mosquitto, and the broker runner itself.

"Nothing arrives" is shown with a positive control: the forbidden message is
sent first and an allowed one after it on the same connection with QoS 1, so
once the allowed one has arrived the forbidden one would have too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.brokers.mosquitto import Mosquitto, MosquittoError, free_port
from controller.site.broker_files import (
    DEVICE_READS,
    DEVICE_WRITES,
    mosquitto_hash,
    regenerate_broker_files,
)
from controller.site.devices import add_device, remove_device
from controller.site.directory import Site
from controller.site.keys import init_site
from edge.config import load_config
from tests.mqtt_helpers import Clients, Collector, ConnectRefused, publish


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = init_site(tmp_path / "site")
    port = free_port()
    for device_id, groups in (("loa-a", ["thon-1", "all"]), ("loa-b", ["thon-2", "all"])):
        add_device(
            site.dir, device_id, ["speaker"], groups, broker_host="127.0.0.1", broker_port=port
        )
    return site


@pytest.fixture
def broker(tmp_path: Path, site: Site) -> Iterator[Mosquitto]:
    port = load_config(site.device_config_path("loa-a")).mqtt.port
    mosquitto = Mosquitto(
        tmp_path / "broker", port, password_file=site.passwd_path, acl_file=site.acl_path
    )
    with mosquitto:
        yield mosquitto


@pytest.fixture
def clients(broker: Mosquitto) -> Iterator[Clients]:
    made = Clients(broker.host, broker.port)
    yield made
    made.close_all()


def as_device(clients: Clients, site: Site, device_id: str):
    config = load_config(site.device_config_path(device_id))
    return clients.connect(config.username, config.password(), config.client_id)


def as_controller(clients: Clients, site: Site):
    return clients.connect(*site.controller_credentials())


def test_device_writes_its_uplink_and_reads_its_commands(site, clients) -> None:
    controller = as_controller(clients, site)
    ingest = Collector(controller, "xaso/#")
    a = as_device(clients, site, "loa-a")
    inbox = Collector(a, ["xaso/dev/loa-a/cmd", "xaso/dev/loa-a/config", "xaso/dev/loa-a/receipt"])
    for leaf in DEVICE_WRITES:
        publish(a, f"xaso/dev/loa-a/{leaf}", leaf.encode(), retain=leaf == "status")
        ingest.wait_topic(f"xaso/dev/loa-a/{leaf}", leaf.encode())
    publish(controller, "xaso/dev/loa-a/config", b"doc", retain=True)
    publish(controller, "xaso/dev/loa-a/cmd", b"ping")
    inbox.wait_topic("xaso/dev/loa-a/cmd", b"ping")
    inbox.wait_topic("xaso/dev/loa-a/config", b"doc")
    publish(controller, "xaso/dev/loa-a/receipt", b"stored")
    inbox.wait_topic("xaso/dev/loa-a/receipt", b"stored")


def test_device_cannot_write_under_another_device(site, clients) -> None:
    ingest = Collector(as_controller(clients, site), "xaso/#")
    a = as_device(clients, site, "loa-a")
    forbidden = [f"xaso/dev/loa-b/{leaf}" for leaf in (*DEVICE_WRITES, *DEVICE_READS)]
    forbidden += ["xaso/dev/loa-a/cmd", "xaso/dev/loa-a/config", "xaso/grp/thon-1/cmd", "xaso/x"]
    forbidden += ["xaso/dev/loa-a/receipt"]  # its own receipts come from the controller only
    for topic in forbidden:
        publish(a, topic, b"forged")  # mosquitto acknowledges and drops it
    publish(a, "xaso/dev/loa-a/event", b"control")
    ingest.wait_topic("xaso/dev/loa-a/event", b"control")
    assert [m.topic for m in ingest.messages if m.payload == b"forged"] == []


def test_device_cannot_read_another_devices_downlink(site, clients) -> None:
    controller = as_controller(clients, site)
    a = as_device(clients, site, "loa-a")
    # mosquitto 2.0 grants these subscriptions and filters at delivery instead
    inbox = Collector(a, ["xaso/dev/loa-b/cmd", "xaso/dev/+/status", "xaso/#", "#"])
    b = as_device(clients, site, "loa-b")
    publish(b, "xaso/dev/loa-b/status", b"b online")
    for leaf in DEVICE_READS:
        publish(controller, f"xaso/dev/loa-b/{leaf}", b"for b")
    publish(controller, "xaso/dev/loa-a/cmd", b"control")
    inbox.wait_topic("xaso/dev/loa-a/cmd", b"control")
    assert [m.topic for m in inbox.messages] == ["xaso/dev/loa-a/cmd"]


def test_device_reads_its_groups_only(site, clients) -> None:
    controller = as_controller(clients, site)
    a = as_device(clients, site, "loa-a")
    inbox = Collector(a, ["xaso/grp/+/cmd", "xaso/grp/+/schedule"])
    publish(controller, "xaso/grp/thon-2/cmd", b"thon-2")
    publish(controller, "xaso/grp/thon-2/schedule", b"thon-2", retain=True)
    publish(controller, "xaso/grp/thon-1/schedule", b"thon-1", retain=True)
    publish(controller, "xaso/grp/all/cmd", b"all")
    publish(controller, "xaso/grp/thon-1/cmd", b"control")
    inbox.wait_topic("xaso/grp/thon-1/cmd", b"control")
    assert [(m.topic, m.payload) for m in inbox.messages] == [
        ("xaso/grp/thon-1/schedule", b"thon-1"),
        ("xaso/grp/all/cmd", b"all"),
        ("xaso/grp/thon-1/cmd", b"control"),
    ]
    # the retained group schedule reaches a member that subscribes later, not a stranger
    late = Collector(as_device(clients, site, "loa-b"), "xaso/grp/+/schedule")
    late.wait_topic("xaso/grp/thon-2/schedule", b"thon-2")
    assert [m.topic for m in late.messages] == ["xaso/grp/thon-2/schedule"]


def test_wrong_credentials_are_refused(site, clients) -> None:
    password = load_config(site.device_config_path("loa-b")).password()
    for username, secret in (
        ("loa-a", "wrong"),
        ("loa-a", password),
        ("nobody", "x"),
        (None, None),
    ):
        with pytest.raises(ConnectRefused):
            clients.connect(username, secret)


def test_new_device_connects_after_a_reload(site, broker, clients) -> None:
    pid = broker.proc.pid
    a = as_device(clients, site, "loa-a")
    stays = Collector(a, "xaso/dev/loa-a/cmd")
    add_device(
        site.dir,
        "loa-c",
        ["kiosk"],
        broker_host=broker.host,
        broker_port=broker.port,
        office_address="192.168.1.23",
    )
    with pytest.raises(ConnectRefused):
        as_device(clients, site, "loa-c")  # the broker has not read the new file yet
    broker.reload()
    c = as_device(clients, site, "loa-c")
    ingest = Collector(as_controller(clients, site), "xaso/dev/+/status")
    publish(c, "xaso/dev/loa-c/status", b"online")
    ingest.wait_topic("xaso/dev/loa-c/status")
    assert broker.proc.pid == pid
    # a device whose entry did not change keeps its connection
    publish(as_controller(clients, site), "xaso/dev/loa-a/cmd", b"still here")
    stays.wait_topic("xaso/dev/loa-a/cmd", b"still here")


def test_removed_device_is_cut_off_at_the_reload(site, broker, clients) -> None:
    b = as_device(clients, site, "loa-b")
    gone = threading.Event()
    b.on_disconnect = lambda *_: gone.set()
    remove_device(site.dir, "loa-b")
    assert not gone.is_set()
    broker.reload()  # mosquitto 2.0 disconnects a client whose password entry went away
    assert gone.wait(10)
    with pytest.raises(ConnectRefused):
        clients.connect("loa-b", "whatever")


def test_python_hashes_with_other_iterations_are_accepted(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(
        f"slow:{mosquitto_hash('pw', iterations=1000)}\nviet:{mosquitto_hash('mật khẩu')}\n"
    )
    with Mosquitto(tmp_path / "broker", password_file=passwd) as broker:
        clients = Clients(broker.host, broker.port)
        try:
            clients.connect("slow", "pw")
            clients.connect("viet", "mật khẩu")
            with pytest.raises(ConnectRefused):
                clients.connect("viet", "mat khau")
        finally:
            clients.close_all()


# --- the runner -------------------------------------------------------------------------------


def test_config_text(tmp_path: Path) -> None:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    text = Mosquitto(tmp_path / "b", 18830, password_file=passwd, acl_file=acl).config_text()
    lines = text.splitlines()
    assert "listener 18830 127.0.0.1" in lines and "allow_anonymous false" in lines
    assert f"password_file {passwd}" in lines and f"acl_file {acl}" in lines
    assert f"persistence_location {tmp_path / 'b'}/" in lines and "autosave_interval 1" in lines
    assert ("user root" in lines) == (os.geteuid() == 0)
    bare = Mosquitto(tmp_path / "b", 18830, persistence=False).config_text().splitlines()
    assert "allow_anonymous true" in bare and "persistence false" in bare


def test_a_taken_port_fails_with_the_log(tmp_path: Path, broker: Mosquitto) -> None:
    other = Mosquitto(tmp_path / "other", broker.port)
    with pytest.raises(MosquittoError, match="Address already in use"):
        other.start(timeout_s=5)
    assert broker.running and not other.running


def test_restart_keeps_the_port_and_retained_documents(site, broker, clients) -> None:
    port = broker.port
    publish(as_controller(clients, site), "xaso/dev/loa-a/config", b"v1", retain=True)
    clients.close_all()
    broker.restart()
    assert broker.running and broker.port == port
    inbox = Collector(as_device(clients, site, "loa-a"), "xaso/dev/loa-a/config")
    inbox.wait_topic("xaso/dev/loa-a/config", b"v1")


def test_kill_then_start_again(site, broker, clients) -> None:
    broker.kill()
    assert not broker.running
    with pytest.raises(OSError):
        as_controller(clients, site)
    broker.start()
    as_controller(clients, site)


def test_reload_reports_what_the_broker_could_not_read(site, broker, clients) -> None:
    site.acl_path.write_text("user loa-a\ntopic sometimes xaso/#\n")
    with pytest.raises(MosquittoError, match="acl"):
        broker.reload()
    regenerate_broker_files(site.dir)
    broker.reload()
    site.passwd_path.rename(site.passwd_path.with_suffix(".away"))
    with pytest.raises(MosquittoError, match="not readable"):
        broker.reload()  # caught before the SIGHUP that would lock every client out
    assert broker.running
    as_controller(clients, site)
