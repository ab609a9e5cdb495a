"""Issue 12 on the broker Xaso generates: a device's credentials reach only its own.

The broker is configured as `xaso demo` runs it (cli/brokers/mosquitto.py with a
controller listener): devices on one listener, where a client id is bound to
the user name, and the controller's users alone on another. What is shown:

- nobody takes another's session: a device asking for another device's client
  id, or the controller's, gets its own instead, and the owner stays connected;
  a device's credentials do not open the controller's listener at all;
- Mosquitto 2 grants every SUBSCRIBE, ``$share`` and ``$SYS`` included (measured
  below, so a newer broker that changes this fails the test and is noticed),
  and a device in a shared group it names takes nothing from the controller's:
  1,000 of 1,000 events reach the database while it tries.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cli.brokers.mosquitto import Mosquitto, free_port
from controller.bus import Bus
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import EventRecord
from controller.fleet.ingest import Ingest, share_group_for
from controller.site.devices import add_device
from controller.site.directory import Site
from controller.site.keys import init_site
from edge.config import load_config
from tests.mqtt_helpers import Clients, Collector, ConnectRefused, connect, publish
from tests.test_ingest import eventually

EVENTS = 1000


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = init_site(tmp_path / "site")
    port = free_port()
    for device_id in ("loa-a", "loa-b"):
        add_device(
            site.dir, device_id, ["speaker"], ["all"], broker_host="127.0.0.1", broker_port=port
        )
    return site


@pytest.fixture
def broker(tmp_path: Path, site: Site) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(
        tmp_path / "broker",
        load_config(site.device_config_path("loa-a")).mqtt.port,
        password_file=site.passwd_path,
        acl_file=site.acl_path,
        controller_port=free_port(),
        controller_users=list(site.meta()["users"]),
    )
    with mosquitto:
        yield mosquitto


@pytest.fixture
def clients(broker: Mosquitto) -> Iterator[Clients]:
    made = Clients(broker.host, broker.port)
    yield made
    made.close_all()


def device_login(site: Site, device_id: str) -> tuple[str, str]:
    config = load_config(site.device_config_path(device_id))
    password = config.password()
    assert config.username is not None and password is not None
    return config.username, password


def watch_disconnects(client) -> threading.Event:
    lost = threading.Event()
    client.on_disconnect = lambda *_: lost.set()
    return lost


def test_another_devices_client_id_gets_the_intruders_own(site, broker, clients) -> None:
    owner = clients.connect(*device_login(site, "loa-a"), "xaso-loa-a")
    lost = watch_disconnects(owner)
    inbox = Collector(owner, "xaso/dev/loa-a/cmd")
    intruder = clients.connect(*device_login(site, "loa-b"), "xaso-loa-a")
    stolen = Collector(intruder, "xaso/dev/loa-a/cmd")
    controller = connect(broker.host, broker.controller_port, *site.controller_credentials())
    try:
        publish(controller, "xaso/dev/loa-a/cmd", b"for a")
        inbox.wait_topic("xaso/dev/loa-a/cmd", b"for a")
    finally:
        controller.disconnect()
    assert not lost.is_set() and stolen.messages == []
    log = broker.log_path.read_text()
    assert "as loa-b (" in log  # the broker's own word: the intruder's effective id


def test_the_controllers_client_id_cannot_be_taken(site, broker, clients) -> None:
    controller_id = "xaso-controller-box"
    controller = connect(
        broker.host, broker.controller_port, *site.controller_credentials(), controller_id
    )
    lost = watch_disconnects(controller)
    try:
        events = Collector(controller, "xaso/dev/+/event")
        # on the devices' listener the id is replaced by the user name ...
        intruder = clients.connect(*device_login(site, "loa-b"), controller_id)
        # ... and the controller's listener knows no device at all
        with pytest.raises(ConnectRefused):
            connect(broker.host, broker.controller_port, *device_login(site, "loa-b"))
        publish(intruder, "xaso/dev/loa-b/event", b"after")
        events.wait_topic("xaso/dev/loa-b/event", b"after")
        assert not lost.is_set()
    finally:
        controller.disconnect()


def test_two_controller_replicas_keep_their_own_ids(site, broker) -> None:
    user, password = site.controller_credentials()
    replicas = [
        connect(broker.host, broker.controller_port, user, password, f"xaso-controller-{n}")
        for n in (1, 2)
    ]
    losses = [watch_disconnects(r) for r in replicas]
    try:
        collectors = [Collector(r, "xaso/dev/loa-a/status") for r in replicas]
        device = connect(broker.host, broker.port, *device_login(site, "loa-a"))
        publish(device, "xaso/dev/loa-a/status", b"online")
        device.disconnect()
        for c in collectors:
            c.wait_topic("xaso/dev/loa-a/status", b"online")
        assert not any(lost.is_set() for lost in losses)
    finally:
        for r in replicas:
            r.disconnect()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'controller.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def test_a_device_in_any_shared_group_takes_nothing_from_ingest(
    site, broker, clients, sessions
) -> None:
    user, password = site.controller_credentials()
    bus = Bus(broker.host, broker.controller_port, user, password, client_id="ingest-a")
    ingest = Ingest(bus, sessions, share_group=share_group_for(password))
    ingest.start()
    bus.start()
    try:
        thief = clients.connect(*device_login(site, "loa-b"))
        names = ("ingest", "ingest-0", "xaso", "controller", "a")
        grabs = [f"$share/{name}/xaso/dev/+/event" for name in names]
        grabs += ["$share/ingest/#", "$share/ingest/xaso/#", "$SYS/#", "#"]
        grabbed = Collector(thief, grabs)
        # Mosquitto 2.0's acl_file grants every subscription and checks each delivery
        assert [code.value for code in grabbed.granted] == [1] * len(grabs)
        device = clients.connect(*device_login(site, "loa-a"))
        for n in range(EVENTS):
            event = {"id": f"e-{n}", "type": "x.test", "ts": 1_763_800_000_000, "body": {}}
            device.publish("xaso/dev/loa-a/event", json.dumps(event), qos=1)
        publish(device, "xaso/dev/loa-a/telemetry", b"{}")  # after every event
        stored = select(func.count()).select_from(EventRecord)

        def all_stored() -> bool:
            with sessions() as s:
                return s.scalar(stored) == EVENTS

        eventually(all_stored, timeout=60, what=f"{EVENTS} events stored")
        assert ingest.stats.received >= EVENTS
        assert grabbed.messages == []
    finally:
        bus.close()
        ingest.close()


def test_the_embedded_broker_binds_client_ids_too(tmp_path: Path, site: Site) -> None:
    """`xaso demo --broker embedded`: one listener, the controller's users keep their ids."""
    from cli.brokers.embedded import EmbeddedBroker

    embedded = EmbeddedBroker(
        tmp_path / "embedded",
        load_config(site.device_config_path("loa-a")).mqtt.port,
        password_file=site.passwd_path,
        acl_file=site.acl_path,
        controller_users=list(site.meta()["users"]),
    )
    with embedded:
        made = Clients(embedded.host, embedded.port)
        try:
            user, password = site.controller_credentials()
            replicas = [made.connect(user, password, f"xaso-controller-{n}") for n in (1, 2)]
            owner = made.connect(*device_login(site, "loa-a"), "xaso-loa-a")
            watched = [watch_disconnects(c) for c in (*replicas, owner)]
            inbox = Collector(owner, "xaso/dev/loa-a/cmd")
            for taken in ("xaso-loa-a", "xaso-controller-1", "loa-a"):
                made.connect(*device_login(site, "loa-b"), taken)
            publish(replicas[1], "xaso/dev/loa-a/cmd", b"for a")
            inbox.wait_topic("xaso/dev/loa-a/cmd", b"for a")
            assert not any(lost.is_set() for lost in watched)
        finally:
            made.close_all()
