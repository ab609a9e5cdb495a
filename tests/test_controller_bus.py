"""The controller's MQTT adapter against the real broker (controller/bus.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from controller.bus import Bus, BusError
from protocol.envelope import MAX_PAYLOAD_BYTES


class Inbox:
    """Collects (topic, payload) from a handler; tests wait on it, never sleep."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self.items.append((topic, payload))
            self._cond.notify_all()

    def wait_until(self, check: Callable[[list[tuple[str, bytes]]], bool], timeout: float = 20):
        with self._cond:
            if not self._cond.wait_for(lambda: check(self.items), timeout):
                raise AssertionError(f"not met within {timeout} s: {self.items[-5:]}")


@pytest.fixture
def make_bus(site, broker) -> Iterator[Callable[..., Bus]]:
    made: list[Bus] = []

    def make(client_id: str = "ctl-test", password: str | None = None, **kw) -> Bus:
        user, pw = site.controller_credentials()
        bus = Bus(broker.host, broker.port, user, password or pw, client_id=client_id, **kw)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()


def test_receives_device_messages_and_publishes_with_puback(make_bus, fleet):
    bus = make_bus()
    inbox = Inbox()
    bus.subscribe("xaso/dev/+/telemetry", inbox)
    bus.start()
    device = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")
    device.publish("xaso/dev/loa-1/telemetry", b'{"n":1}')
    inbox.wait_until(lambda items: ("xaso/dev/loa-1/telemetry", b'{"n":1}') in items)

    bus.publish("xaso/dev/loa-1/cmd", b"hello")  # returns once the broker has acked it
    device.wait_for(lambda m: m.topic == "xaso/dev/loa-1/cmd" and m.payload == b"hello")


def test_socket_has_no_nagle_delay(make_bus):
    bus = make_bus()
    bus.start()
    sock = bus._client.socket()
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_oversized_payload_is_refused_before_the_broker(make_bus):
    bus = make_bus()
    bus.start()
    with pytest.raises(ValueError, match="bytes >"):
        bus.publish("xaso/dev/loa-1/cmd", b"x" * (MAX_PAYLOAD_BYTES + 1))
    bus.publish("xaso/dev/loa-1/cmd", b"x" * MAX_PAYLOAD_BYTES)


def test_wrong_password_is_a_bus_error(make_bus):
    bus = make_bus(password="not-the-password")
    with pytest.raises(BusError, match="credentials"):
        bus.start(timeout_s=3)


def test_a_failing_handler_does_not_stop_the_next_message(make_bus, probe):
    bus = make_bus()
    inbox = Inbox()

    def picky(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("boom")
        inbox(topic, payload)

    bus.subscribe("xaso/dev/+/event", picky)
    bus.start()
    probe.publish("xaso/dev/loa-1/event", b"bad")
    probe.publish("xaso/dev/loa-1/event", b"good")
    inbox.wait_until(lambda items: items == [("xaso/dev/loa-1/event", b"good")])


def test_a_handler_may_publish_and_wait_for_its_puback(make_bus, probe):
    """Handlers run off paho's network thread, so waiting for a PUBACK there cannot hang."""
    bus = make_bus()
    bus.subscribe(
        "xaso/dev/+/ack", lambda topic, payload: bus.publish("xaso/dev/loa-2/cmd", payload)
    )
    bus.start()
    probe.publish("xaso/dev/loa-1/ack", b"relay me")
    probe.wait_for(lambda m: m.topic == "xaso/dev/loa-2/cmd" and m.payload == b"relay me")


def test_subscriptions_come_back_after_a_broker_restart(make_bus, broker, probe):
    bus = make_bus()  # a clean session: the broker forgets its subscriptions
    inbox = Inbox()
    bus.subscribe("xaso/dev/+/status", inbox)
    bus.start()
    broker.restart()
    # Until the bus is back, what the probe publishes has no subscriber: publish
    # again until one arrives, which only a subscription made anew can receive.
    for _attempt in range(200):
        probe.publish("xaso/dev/loa-3/status", b"after restart")
        try:
            inbox.wait_until(lambda items: len(items) > 0, timeout=0.5)
            break
        except AssertionError:
            continue
    assert inbox.items[0] == ("xaso/dev/loa-3/status", b"after restart")


def test_a_shared_subscription_splits_messages_between_buses(make_bus, probe):
    inbox = Inbox()  # topics are recorded as "<bus>:<topic>"
    for n in range(2):
        bus = make_bus(client_id=f"ingest-{n}")
        bus.subscribe("$share/ingest/xaso/dev/+/event", lambda t, p, n=n: inbox(f"{n}:{t}", p))
        bus.start()
    sent = [f"m{i}".encode() for i in range(40)]
    for payload in sent:
        probe.publish("xaso/dev/loa-1/event", payload)
    inbox.wait_until(lambda items: len(items) >= len(sent))
    assert sorted(p for _, p in inbox.items) == sorted(sent)  # each message once
    assert {t.split(":")[0] for t, _ in inbox.items} == {"0", "1"}  # to either bus


def test_a_bad_shared_filter_is_refused(make_bus):
    bus = make_bus()
    with pytest.raises(ValueError, match=r"\$share/<group>/<filter>"):
        bus.subscribe("$share/only-group", lambda t, p: None)


def test_tls_verifies_the_broker_with_the_ca_file_or_the_systems_cas(site, tmp_path, monkeypatch):
    """`[mqtt] tls = true` without a CA file means the system's CAs, never plain TCP."""
    from cli.brokers.mosquitto import Mosquitto
    from tests.tls_helpers import write_tls_pair

    (tmp_path / "tls").mkdir()
    cert, key = write_tls_pair(tmp_path / "tls")
    broker = Mosquitto(
        tmp_path / "tls-broker",
        password_file=site.passwd_path,
        acl_file=site.acl_path,
        tls=(cert, key),
    )
    user, password = site.controller_credentials()
    with broker:
        with_ca = Bus(broker.host, broker.port, user, password, client_id="tls-ca", tls_ca=cert)
        with_ca.start()
        with_ca.close()
        # a self-signed certificate is not among the system's CAs: refused, not downgraded
        system = Bus(broker.host, broker.port, user, password, client_id="tls-sys", tls=True)
        with pytest.raises(BusError):
            system.start(timeout_s=3)
        system.close()
        # ... until the system's CA store holds it (OpenSSL reads SSL_CERT_FILE)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        system = Bus(broker.host, broker.port, user, password, client_id="tls-sys2", tls=True)
        system.start()
        system.publish("xaso/tls-check", b"ok")
        system.close()


class Settling:
    """A settling handler that settles only when told: what it holds is not acked."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.held: list[Callable[[], None]] = []

    def __call__(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:
        self.held.append(done)
        self.inbox(topic, payload)


def until_logged(broker, needle: str, times: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while broker.log_path.read_text(errors="replace").count(needle) < times:
        assert time.monotonic() < deadline, f"the broker did not log {needle!r} {times} times"
        time.sleep(0.05)


def test_what_a_persistent_bus_did_not_settle_comes_again_and_what_it_settled_does_not(
    make_bus, fleet, broker
):
    device = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")
    first = Settling()
    bus = make_bus("ctl-stable", clean_session=False)
    bus.subscribe_settled("$share/ingest/xaso/dev/+/event", first)
    bus.start()
    for n in range(10):
        device.publish("xaso/dev/loa-1/event", b"%d" % n)
    first.inbox.wait_until(lambda items: len(items) == 10)
    for done in first.held[:4]:  # committed; the other six were not when it "crashed"
        done()
    # the acks are in before it goes: closing can overtake acks still on their way
    until_logged(broker, "Received PUBACK from ctl-stable", 4)
    bus.close()

    again = Settling()
    bus = make_bus("ctl-stable", clean_session=False)
    bus.subscribe_settled("$share/ingest/xaso/dev/+/event", again)
    bus.start()
    again.inbox.wait_until(lambda items: len(items) >= 6)
    assert sorted(p for _, p in again.inbox.items) == [b"%d" % n for n in range(4, 10)]
    for done in again.held:
        done()
    until_logged(broker, "Received PUBACK from ctl-stable", 10)
    bus.close()

    quiet = Settling()
    bus = make_bus("ctl-stable", clean_session=False)
    bus.subscribe_settled("$share/ingest/xaso/dev/+/event", quiet)
    bus.start()
    device.publish("xaso/dev/loa-1/event", b"after")  # ordered after anything kept
    quiet.inbox.wait_until(lambda items: ("xaso/dev/loa-1/event", b"after") in items)
    assert [p for _, p in quiet.inbox.items] == [b"after"]


def test_what_arrives_while_a_persistent_bus_is_away_reaches_its_handlers_on_return(
    make_bus, fleet, broker
):
    bus = make_bus("ctl-away", clean_session=False)
    bus.subscribe("$share/ingest/xaso/dev/+/event", Inbox())
    bus.start()
    bus.close()

    device = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")
    for n in range(300):  # more than the broker keeps in flight for one client
        device.publish("xaso/dev/loa-1/event", b"%d" % n)
    broker.stop()  # a clean restart: the queue is saved and read back
    broker.start()

    back = Inbox()
    bus = make_bus("ctl-away", clean_session=False)
    # registered before the CONNACK that delivers the queue: nothing is dropped unhandled
    bus.subscribe("$share/ingest/xaso/dev/+/event", back)
    bus.start()
    back.wait_until(lambda items: len(items) >= 300, timeout=60)
    assert sorted(int(p) for _, p in back.items) == list(range(300))


def test_a_settling_handler_that_raises_does_not_hold_its_message_forever(make_bus, fleet, broker):
    device = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")

    def broken(topic: str, payload: bytes, done: Callable[[], None]) -> None:
        raise RuntimeError("a bug")

    bus = make_bus("ctl-broken", clean_session=False)
    bus.subscribe_settled("xaso/dev/+/event", broken)
    marks = Inbox()
    bus.subscribe("xaso/dev/+/telemetry", marks)
    bus.start()
    device.publish("xaso/dev/loa-1/event", b"once")
    # one worker, in order: once the mark is handled, the event's ack went out before it
    device.publish("xaso/dev/loa-1/telemetry", b"mark")
    marks.wait_until(lambda items: len(items) == 1)
    until_logged(broker, "Received PUBACK from ctl-broken", 2)
    bus.close()  # the handler's failure settled it: the broker has nothing kept

    after = Inbox()
    bus = make_bus("ctl-broken", clean_session=False)
    bus.subscribe("xaso/dev/+/event", after)
    bus.start()
    device.publish("xaso/dev/loa-1/event", b"next")
    after.wait_until(lambda items: ("xaso/dev/loa-1/event", b"next") in items)
    assert [p for _, p in after.items] == [b"next"]


class Batched:
    """A batched handler that keeps its tickets; the test settles them when it likes."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.tickets: list[int | None] = []
        self.threads: set[str] = set()

    def __call__(self, topic: str, payload: bytes, ticket: int | None) -> None:
        self.tickets.append(ticket)
        self.threads.add(threading.current_thread().name)
        self.inbox(topic, payload)


def test_a_batched_handler_is_acked_only_for_the_tickets_it_settles(make_bus, fleet, broker):
    device = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")
    first = Batched()
    bus = make_bus("ctl-batched", clean_session=False)
    bus.subscribe_batched("$share/ingest/xaso/dev/+/event", first)
    bus.start()
    for n in range(10):
        device.publish("xaso/dev/loa-1/event", b"%d" % n)
    first.inbox.wait_until(lambda items: len(items) == 10)
    assert "bus-worker" not in first.threads  # run on paho's own thread: no hand-off
    assert all(t is not None for t in first.tickets)  # QoS 1: each has its ack to come
    bus.settle(first.tickets[:4])  # committed; the other six were not when it "crashed"
    until_logged(broker, "Received PUBACK from ctl-batched", 4)
    bus.close()

    again = Batched()
    bus = make_bus("ctl-batched", clean_session=False)
    bus.subscribe_batched("$share/ingest/xaso/dev/+/event", again)
    bus.start()
    again.inbox.wait_until(lambda items: len(items) >= 6)
    assert sorted(p for _, p in again.inbox.items) == [b"%d" % n for n in range(4, 10)]
    bus.settle(again.tickets)
    until_logged(broker, "Received PUBACK from ctl-batched", 10)
    bus.close()

    quiet = Batched()
    bus = make_bus("ctl-batched", clean_session=False)
    bus.subscribe_batched("$share/ingest/xaso/dev/+/event", quiet)
    bus.start()
    device.publish("xaso/dev/loa-1/event", b"after")
    quiet.inbox.wait_until(lambda items: ("xaso/dev/loa-1/event", b"after") in items)
    assert [p for _, p in quiet.inbox.items] == [b"after"]


def test_a_batched_handler_that_raises_settles_its_message(make_bus, fleet, broker):
    device = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")

    def broken(topic: str, payload: bytes, ticket: int | None) -> None:
        raise RuntimeError("a bug")

    bus = make_bus("ctl-batched-broken", clean_session=False)
    bus.subscribe_batched("xaso/dev/+/event", broken)
    bus.start()
    device.publish("xaso/dev/loa-1/event", b"once")
    until_logged(broker, "Received PUBACK from ctl-batched-broken", 1)
    bus.close()

    after = Inbox()
    bus = make_bus("ctl-batched-broken", clean_session=False)
    bus.subscribe("xaso/dev/+/event", after)
    bus.start()
    device.publish("xaso/dev/loa-1/event", b"next")
    after.wait_until(lambda items: ("xaso/dev/loa-1/event", b"next") in items)
    assert [p for _, p in after.items] == [b"next"]


def test_a_batched_subscription_shares_its_topics_with_no_other(make_bus):
    bus = make_bus()
    bus.subscribe_batched("$share/g/xaso/dev/+/telemetry", lambda t, p, k: None)
    bus.subscribe("xaso/dev/+/event", lambda t, p: None)  # other topics: fine
    for overlapping in ("xaso/dev/loa-1/telemetry", "xaso/#", "xaso/dev/+/+"):
        with pytest.raises(ValueError, match="overlaps"):
            bus.subscribe(overlapping, lambda t, p: None)
    with pytest.raises(ValueError, match="overlaps"):
        bus.subscribe_batched("xaso/dev/+/event", lambda t, p, k: None)
