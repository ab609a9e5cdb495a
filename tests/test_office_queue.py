"""Several kiosks, one queue: provisioning, the broker's ACL, the wire, and a split office.

The kiosks reach a real Mosquitto each through its own TCP link
(tests/lossy_link.py); a cut resets the kiosk's connection and refuses new
ones until it heals, so the kiosk sees a real network cut.
"""

from __future__ import annotations

import json
import random
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from cli.brokers.mosquitto import Mosquitto, free_port
from controller.site.devices import add_device, remove_device
from controller.site.directory import ProvisioningError, Site
from controller.site.keys import init_site
from kiosk.config import KioskSection
from kiosk.numbering import QueuePolicy, Service, call_order, local_day
from kiosk.office import KioskError
from kiosk.office_log import Conflict, owns
from kiosk.service import Kiosk
from kiosk.shared_queue import SharedQueue
from kiosk.ticket_store import Ticket
from kiosk.virtual_printer import VirtualPrinter
from plumbing.validation import convert
from protocol.errors import Refusal
from protocol.office import OfficeEntry, office_entries, office_sync, read_office
from protocol.topics import Topics
from tests.conftest import KioskClock
from tests.lossy_link import LossyLink
from tests.mqtt_helpers import Clients, Collector, publish

WAIT_S = 60.0
ALWAYS = (("00:00", "24:00"),)
SERVICES = [
    Service(code="ho-tich", name_vi="Hộ tịch", name_en="Civil status", prefix="A",
            hours=ALWAYS, weekdays=frozenset(range(7))),
    Service(code="dat-dai", name_vi="Đất đai", name_en="Land", prefix="B",
            hours=ALWAYS, weekdays=frozenset(range(7))),
]  # fmt: skip
QUEUES = [s.code for s in SERVICES]
POLICY = QueuePolicy("interleave", 3)  # the agents use strict (the default)
T0 = 1_764_640_800_000  # 02/12/2025 09:00 in Hà Nội


def kiosk_config(site: Site, device: str) -> dict:
    return tomllib.loads(site.device_config_path(device).read_text())


@pytest.fixture
def office_site(tmp_path: Path) -> Site:
    site = init_site(tmp_path / "site")
    port = free_port()
    for device, roles, queue in (
        ("kiosk-a", ["kiosk"], "tanphu"),
        ("kiosk-b", ["kiosk"], "tanphu"),
        ("kiosk-c", ["kiosk"], "phuoc-an"),
        ("loa-1", ["speaker"], ""),
    ):
        address = "192.168.1.21" if "kiosk" in roles else ""
        add_device(site.dir, device, roles, [], broker_host="127.0.0.1", broker_port=port,
                   office_address=address, queue=queue)  # fmt: skip
    return site


@pytest.fixture
def office_broker(tmp_path: Path, office_site: Site) -> Iterator[Mosquitto]:
    port = kiosk_config(office_site, "kiosk-a")["mqtt"]["port"]
    with Mosquitto(
        tmp_path / "broker",
        port,
        password_file=office_site.passwd_path,
        acl_file=office_site.acl_path,
    ) as mosquitto:
        yield mosquitto


# --- provisioning and the ACL ------------------------------------------------------------------


def test_provisioning_lists_the_kiosks_of_a_queue_in_each_of_them(office_site: Site) -> None:
    for device in ("kiosk-a", "kiosk-b"):
        section = convert(kiosk_config(office_site, device)["kiosk"], KioskSection, strict=False)
        assert section.queue == "tanphu" and section.queue_kiosks == ["kiosk-a", "kiosk-b"]
    assert convert(
        kiosk_config(office_site, "kiosk-a")["kiosk"], KioskSection, strict=False
    ).queue_slot("kiosk-b") == (1, 2)
    assert kiosk_config(office_site, "kiosk-c")["kiosk"]["queue_kiosks"] == ["kiosk-c"]
    remove_device(office_site.dir, "kiosk-b")
    assert kiosk_config(office_site, "kiosk-a")["kiosk"]["queue_kiosks"] == ["kiosk-a"]
    acl = office_site.acl_path.read_text()
    assert "xaso/dev/kiosk-b/office" not in acl


@pytest.mark.parametrize(
    ("roles", "queue", "error"),
    [
        (["speaker"], "tanphu", "--queue needs the kiosk role: add --role kiosk"),
        (["kiosk"], "Tân Phú", "office queue id 'Tân Phú' is not valid"),
        (["kiosk"], "a/b", "office queue id 'a/b' is not valid"),
    ],
)
def test_provisioning_refuses_a_bad_queue(
    office_site: Site, roles: list[str], queue: str, error: str
) -> None:
    with pytest.raises(ProvisioningError, match=error):
        add_device(
            office_site.dir, "kiosk-x", roles, [], broker_host="h", broker_port=1, queue=queue
        )
    assert "kiosk-x" not in {d.id for d in office_site.devices()}


def test_the_broker_lets_only_the_kiosks_of_one_queue_read_each_other(
    office_site: Site, office_broker: Mosquitto
) -> None:
    clients = Clients(office_broker.host, office_broker.port)
    try:
        login = {
            d: kiosk_config(office_site, d)["mqtt"]
            for d in ("kiosk-a", "kiosk-b", "kiosk-c", "loa-1")
        }
        conn = {d: clients.connect(m["username"], m["password"]) for d, m in login.items()}
        inbox = {d: Collector(conn[d], ["xaso/dev/+/office"]) for d in conn}
        # forged: a speaker and another office's kiosk write on their own and on a's topic
        for d in ("loa-1", "kiosk-c"):
            publish(conn[d], f"xaso/dev/{d}/office", b"forged")
            publish(conn[d], "xaso/dev/kiosk-a/office", b"forged")
        publish(conn["kiosk-b"], "xaso/dev/kiosk-a/office", b"forged")  # a peer, not as a
        publish(conn["kiosk-a"], "xaso/dev/kiosk-a/office", b"from a")
        publish(conn["kiosk-b"], "xaso/dev/kiosk-b/office", b"from b")
        inbox["kiosk-b"].wait_topic("xaso/dev/kiosk-a/office", b"from a")
        inbox["kiosk-a"].wait_topic("xaso/dev/kiosk-b/office", b"from b")
        publish(conn["kiosk-c"], "xaso/dev/kiosk-c/event", b"control")  # c's last, then check
        controller = clients.connect(*office_site.controller_credentials())
        Collector(controller, "xaso/#")
        for d in ("kiosk-c", "loa-1"):
            publish(conn["kiosk-a"], "xaso/dev/kiosk-a/office", f"to {d}?".encode())
        publish(conn["kiosk-b"], "xaso/dev/kiosk-b/office", b"b again")
        inbox["kiosk-a"].wait_topic("xaso/dev/kiosk-b/office", b"b again")
        assert [m.payload for m in inbox["kiosk-a"].messages] == [b"from b", b"b again"]
        assert [m.payload for m in inbox["kiosk-b"].messages][:1] == [b"from a"]
        assert all(m.payload != b"forged" for d in conn for m in inbox[d].messages)
        assert [m.topic for d in ("kiosk-c", "loa-1") for m in inbox[d].messages] == []
    finally:
        clients.close_all()


# --- the wire ----------------------------------------------------------------------------------


def call_entry(**kw: object) -> OfficeEntry:
    return msgspec.convert(
        {"seq": 1, "at_ms": T0, "kind": "call", "ticket": "t", "counter": 1, **kw}, OfficeEntry
    )


def test_office_messages_read_back() -> None:
    payload = office_entries("tanphu", "kiosk-a", [call_entry()])
    msg = read_office(payload, "kiosk-a", "tanphu")
    assert msg.type == "office.entries" and msg.entries[0].counter == 1
    sync = read_office(office_sync("tanphu", "kiosk-b", {"kiosk-a": 3}), "kiosk-b", "tanphu")
    assert sync.type == "office.sync" and sync.have == {"kiosk-a": 3}


def _entries(**entry: object) -> bytes:
    e = {"seq": 1, "at_ms": T0, "kind": "call", "ticket": "t", "counter": 1, **entry}
    doc = {"v": 1, "type": "office.entries", "office": "tanphu", "kiosk": "kiosk-a", "entries": [e]}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b"\xff{", "not_json", "not JSON"),
        (b"[1]", "unknown_type", "type None is not an office message"),
        (b'{"type": "office.vote"}', "unknown_type", "'office.vote'"),
        (_entries(counter=0), "bad_body", "a call names its counter"),
        (_entries(kind="issue"), "bad_body", "an issue names its day, service, n and number"),
        (_entries(kind="transfer"), "bad_body", "a transfer names the queue"),
        (_entries(seq="1"), "bad_body", "entries.0.seq"),
        (_entries(seq=0), "bad_body", "entries.0.seq"),
        (_entries(extra=1), "bad_body", "entries.0.extra"),
        (_entries(ticket="x" * 65), "bad_body", "entries.0.ticket"),
        (b'{"v":1,"type":"office.entries","office":"tanphu","kiosk":"kiosk-a","entries":[]}',
         "bad_body", "entries"),
        (b'{"v":2,"type":"office.sync","office":"tanphu","kiosk":"kiosk-a","have":{}}',
         "bad_body", "v"),
        (b'{"v":1,"type":"office.sync","office":"tanphu","kiosk":"kiosk-a","have":{"A":1}}',
         "bad_body", "have"),
        (b"{" + b" " * 200_000 + b"}", "too_large", "over"),
    ],
)  # fmt: skip
def test_bad_office_messages_are_refused_saying_why(
    payload: bytes, reason: str, detail: str
) -> None:
    with pytest.raises(Refusal) as refused:
        read_office(payload, "kiosk-a", "tanphu")
    assert refused.value.reason == reason and detail in refused.value.detail


def test_a_message_on_another_kiosks_topic_or_for_another_office_is_refused() -> None:
    payload = office_entries("tanphu", "kiosk-a", [call_entry()])
    with pytest.raises(Refusal, match="wrong_topic: kiosk 'kiosk-a' wrote on 'kiosk-b'"):
        read_office(payload, "kiosk-b", "tanphu")
    with pytest.raises(Refusal, match="wrong_target: for office 'tanphu', not 'phuoc-an'"):
        read_office(payload, "kiosk-a", "phuoc-an")


# --- two kiosks, three counters, a split office ------------------------------------------------


class Side:
    """One kiosk of the office: its shared queue, its link to the broker, its counters."""

    def __init__(self, site: Site, broker: Mosquitto, tmp: Path, device: str, counters: list[int]):
        mqtt = kiosk_config(site, device)["mqtt"]
        self.link = LossyLink(
            broker.host, broker.port, seed=hash(device) % 1000, latency_ms=None
        ).start()
        self.told: list[Conflict] = []
        self.queue = SharedQueue(
            tmp / device / "office.sqlite", queue="tanphu", kiosk=device,
            kiosks=["kiosk-a", "kiosk-b"], topics=Topics(), on_conflict=self.told.append,
        )  # fmt: skip
        self.queue.connect("127.0.0.1", self.link.port, mqtt["username"], mqtt["password"])
        self.counters = counters
        self.cut = False

    def split(self) -> None:
        self.link.partition(refuse=True)
        self.link.drop()
        self.cut = True
        # a real cut: wait until the kiosk's own client has lost the broker
        assert self.queue.wait_link(up=False, timeout_s=WAIT_S), "the kiosk never saw the cut"

    def rejoin(self) -> None:
        self.link.heal()
        self.cut = False

    def close(self) -> None:
        self.queue.close()
        self.link.close()


def counter_turn(side: Side, counter: int, now: int) -> None:
    """The officer finishes with the citizen called here, if any, and calls the next."""
    for x in side.queue.settled().tickets.values():
        if x.state == "called" and x.counter == counter:
            side.queue.record("serve", x.id, now, counter=counter)
    side.queue.call_next(counter, QUEUES, POLICY, now)


def run_office(
    sides: list[Side], rng: random.Random
) -> tuple[int, list[tuple[str, int, str]], int]:
    """500 tickets at random kiosks, counters calling, links cut and healed at random."""
    now = T0
    issued: list[tuple[str, int, str]] = []  # (service, n, kiosk)
    split_issues = 0
    for i in range(500):
        now += 1_000
        side = sides[rng.randrange(2)]
        skew = -3_000 if side is sides[1] else 0  # kiosk-b's clock is 3 s behind
        t = side.queue.issue(SERVICES[rng.randrange(2)], now + skew, priority=rng.random() < 0.15)
        issued.append((t.service, t.n, side.queue.kiosk))
        split_issues += any(s.cut for s in sides)
        if rng.random() < 0.35:
            side = sides[rng.randrange(2)]
            counter_turn(side, rng.choice(side.counters), now + skew)
        if i % 50 == 10 or rng.random() < 0.02:  # at least ten cuts, and random ones
            rng.choice(sides).split()
        if i % 50 == 40 or rng.random() < 0.03:
            for s in sides:
                if s.cut:
                    s.rejoin()
    for s in sides:
        if s.cut:
            s.rejoin()
    return now, issued, split_issues


def test_two_kiosks_and_three_counters_share_one_queue_through_random_cuts(
    office_site: Site, office_broker: Mosquitto, tmp_path: Path
) -> None:
    a = Side(office_site, office_broker, tmp_path, "kiosk-a", [1, 2])
    b = Side(office_site, office_broker, tmp_path, "kiosk-b", [3])
    sides = [a, b]
    try:
        assert all(s.queue.wait_link(up=True, timeout_s=WAIT_S) for s in sides)
        now, issued, split_issues = run_office(sides, random.Random(15))
        own = {
            s.queue.kiosk: sum(1 for k, _ in s.queue.entries() if k == s.queue.kiosk) for s in sides
        }
        for s in sides:  # the rejoin: each side ends up with every act of both
            assert s.queue.wait_for(lambda _s, log: len(log) == sum(own.values()), WAIT_S)
        assert a.queue.entries() == b.queue.entries()

        # no number twice, each kiosk within its own numbers, and both sides settle alike
        assert len(issued) == 500 and split_issues > 50
        assert len({(s, n) for s, n, _ in issued}) == 500
        assert all(owns(n, ["kiosk-a", "kiosk-b"].index(k), 2) for _, n, k in issued)
        settled = a.queue.settled()
        assert settled == b.queue.settled()
        assert len(settled.tickets) == 500
        # a ticket called at both sides of a split went to the earliest call; its loser was told
        lost = [c for c in settled.conflicts if c.entry.kind == "call"]
        assert lost, "no ticket was called at both sides: the split was not exercised"
        for c in lost:
            assert c.winner is not None and c.winner.order < c.entry.order
            loser = a if c.entry.kiosk == "kiosk-a" else b
            assert c.entry in {told.entry for told in loser.told}
            assert settled.tickets[c.entry.ticket].counter == c.winner.counter

        # after the rejoin the three counters call in one fair order: numbering's, by issue time
        day = "2025-12-02"
        expected = [t.number for t in settled.call_order(day, QUEUES, POLICY)]
        fair = call_order(
            settled.waiting(day, QUEUES), POLICY, settled.normal_since_priority(day, QUEUES)
        )
        assert expected == [t.number for t in fair] and len(expected) > 50
        called: list[str] = []
        for k in range(len(expected)):
            now += 1_000
            side = sides[k % 2]
            counter = side.counters[k % len(side.counters)]
            t = side.queue.call_next(counter, QUEUES, POLICY, now)
            assert t is not None
            called.append(t.number)
            total = len(side.queue.entries())
            other = b if side is a else a
            assert other.queue.wait_for(lambda _s, log, n=total: len(log) >= n, WAIT_S)
        assert called == expected
        final = a.queue.settled()
        assert final.waiting(day, QUEUES) == [] and final.conflicts == settled.conflicts
    finally:
        for s in sides:
            s.close()


# --- the kiosk service on a shared queue -------------------------------------------------------


class Mirrored:
    """Lets a test wait until a kiosk's ticket file has taken its peer's acts."""

    def __init__(self, kiosk: Kiosk) -> None:
        self.kiosk = kiosk
        self.cond = threading.Condition()
        shared = kiosk.shared
        assert shared is not None and shared.on_change is not None
        follow = shared.on_change

        def changed() -> None:
            follow()
            with self.cond:
                self.cond.notify_all()

        shared.on_change = changed

    def wait(self, predicate: Callable[[list[Ticket]], bool]) -> list[Ticket]:
        def tickets() -> list[Ticket]:
            return self.kiosk.store.tickets(local_day(self.kiosk.now_ms()))

        with self.cond:
            assert self.cond.wait_for(lambda: predicate(tickets()), WAIT_S), tickets()
        return tickets()


def by_number(tickets: list[Ticket]) -> dict[str, Ticket]:
    return {t.number: t for t in tickets}


def test_two_kiosk_services_print_their_own_tickets_and_call_from_one_queue(
    office_site: Site, office_broker: Mosquitto, tmp_path: Path
) -> None:
    clock = KioskClock()
    made: list[tuple[Kiosk, LossyLink, VirtualPrinter]] = []
    try:
        for device in ("kiosk-a", "kiosk-b"):
            printer = VirtualPrinter(tmp_path / device / "printed").start()
            link = LossyLink(
                office_broker.host, office_broker.port, seed=1, latency_ms=None
            ).start()
            mqtt = kiosk_config(office_site, device)["mqtt"]
            shared = SharedQueue(
                tmp_path / device / "office.sqlite", queue="tanphu", kiosk=device,
                kiosks=["kiosk-a", "kiosk-b"], topics=Topics(),
            )  # fmt: skip
            cfg = convert({"printer_url": printer.path, "status_poll_s": 0.1, "voice": "off",
                 "web_host": "127.0.0.1", "queue": "tanphu",
                 "queue_kiosks": ["kiosk-a", "kiosk-b"]}, KioskSection, strict=False)  # fmt: skip
            (tmp_path / device / "state").mkdir(parents=True)
            kiosk = Kiosk(cfg, tmp_path / device / "state", lambda _b: None, clock, shared=shared)
            kiosk.start()
            shared.connect("127.0.0.1", link.port, mqtt["username"], mqtt["password"])
            assert shared.wait_link(up=True, timeout_s=WAIT_S)
            made.append((kiosk, link, printer))
        (a, _, printer_a), (b, link_b, printer_b) = made
        seen_a, seen_b = Mirrored(a), Mirrored(b)
        numbers = []
        for kiosk, seen in ((a, seen_b), (b, seen_a), (a, seen_b), (b, seen_a)):
            clock.ms += 1_000
            numbers.append(kiosk.issue("ho-tich")["number"])
            issued = len(numbers)
            seen.wait(lambda ts, n=issued: len(ts) == n)
        assert numbers == ["A001", "A002", "A003", "A004"]
        # each kiosk prints its own tickets only
        assert len(printer_a.wait_tickets(2)) == 2 and len(printer_b.wait_tickets(2)) == 2
        assert by_number(seen_b.wait(lambda ts: len(ts) == 4))["A001"].printed  # a's, not b's job
        assert {t.number for t in b.store.pending_prints()} <= {"A002", "A004"}  # its own only
        assert {t.number for t in a.store.pending_prints()} <= {"A001", "A003"}

        # counter 3 at kiosk b calls the oldest, issued at kiosk a; a's file follows
        clock.ms += 1_000
        assert b.counter(3, "next", officer="o3")["ticket"]["number"] == "A001"
        seen_a.wait(lambda ts: by_number(ts)["A001"].counter == 3)

        # a split: both sides call A002; the earlier call (counter 1 at a) wins at the rejoin
        link_b.partition(refuse=True)
        link_b.drop()
        assert b.shared is not None and b.shared.wait_link(up=False, timeout_s=WAIT_S)
        clock.ms += 1_000
        assert a.counter(1, "next", officer="o1")["ticket"]["number"] == "A002"
        clock.ms += 1_000
        assert b.counter(3, "next", officer="o3")["ticket"]["number"] == "A002"  # b did not know
        link_b.heal()
        after = seen_b.wait(lambda ts: by_number(ts)["A002"].counter == 1)
        assert by_number(after)["A001"].state == "served"
        seen_a.wait(lambda ts: by_number(ts)["A001"].state == "served")
        # counter 3 holds nobody now; its next call takes the next in the one queue
        with pytest.raises(KioskError, match="Quầy 3 không có số nào đang phục vụ"):
            b.counter(3, "served")
        clock.ms += 1_000
        assert b.counter(3, "next")["ticket"]["number"] == "A003"
        seen_a.wait(lambda ts: by_number(ts)["A003"].counter == 3)
        with pytest.raises(KioskError) as taken:  # a's counter 2 cannot call a taken number
            a.counter(2, "call", number="A003")
        assert taken.value.code in ("cannot_call", "taken")
    finally:
        for kiosk, link, printer in made:
            kiosk.close()
            link.close()
            printer.close()


# --- two kiosk agents ----------------------------------------------------------------------------


def kiosk_agent(site: Site, device: str, link: LossyLink, tmp: Path, printer: VirtualPrinter):
    """A kiosk agent as provisioned, its broker reached through ``link``; started."""
    from edge.agent import Agent
    from edge.config import parse_config
    from kiosk.role import attach

    doc = kiosk_config(site, device)
    doc["mqtt"].update(port=link.port, reconnect_min_s=0.2, reconnect_max_s=1.0)
    doc["state"] = {"dir": str(tmp / device / "state")}
    all_day = {"hours": [["00:00", "24:00"]], "weekdays": list(range(7))}
    doc["kiosk"].update(
        printer_url=printer.path, voice="off", web_host="127.0.0.1", web_port=free_port(),
        status_poll_s=0.2, services=[
            {"code": s.code, "name_vi": s.name_vi, "name_en": s.name_en, "prefix": s.prefix}
            | all_day for s in SERVICES
        ],
    )  # fmt: skip
    config = parse_config(doc, tmp / f"{device}.toml")
    agent = Agent(config)
    kiosk = attach(agent, config.kiosk)
    agent.start()
    return agent, kiosk


def test_two_kiosk_agents_share_one_queue_through_a_cut(
    office_site: Site, office_broker: Mosquitto, tmp_path: Path
) -> None:
    opened: list = []
    try:
        sides = {}
        for device in ("kiosk-a", "kiosk-b"):
            printer = VirtualPrinter(tmp_path / device / "printed").start()
            link = LossyLink(
                office_broker.host, office_broker.port, seed=2, latency_ms=None
            ).start()
            opened += [printer, link]
            agent, kiosk = kiosk_agent(office_site, device, link, tmp_path, printer)
            opened.append(agent)
            assert kiosk.shared is not None and kiosk.shared.wait_link(up=True, timeout_s=WAIT_S)
            sides[device] = (agent, kiosk, link, Mirrored(kiosk))
        (agent_a, a, link_a, seen_a), (agent_b, b, _, seen_b) = sides.values()
        assert a.shared is not None and b.shared is not None
        for i in range(6):
            (a if i % 2 else b).issue(QUEUES[i % 2], priority=i == 4)
        for seen in (seen_a, seen_b):
            seen.wait(lambda ts: len(ts) == 6)

        # kiosk-a's network is cut: its agent and its queue see it; both sides go on
        link_a.partition(refuse=True)
        link_a.drop()
        assert a.shared.wait_link(up=False, timeout_s=WAIT_S)
        for i in range(10):
            (a if i % 2 else b).issue(QUEUES[i % 2], priority=i == 7)  # a's, unknown to b
        first_a = a.counter(1, "next", officer="o1")["ticket"]["number"]
        first_b = b.counter(3, "next", officer="o3")["ticket"]["number"]
        assert first_a == first_b == "A006"  # the priority ticket both knew, called at both
        link_a.heal()
        for seen in (seen_a, seen_b):
            tickets = seen.wait(lambda ts: len(ts) == 16 and by_number(ts)[first_a].counter == 1)
        assert len({t.number for t in tickets}) == 16  # no number twice
        assert a.shared.settled() == b.shared.settled()
        lost = [c for c in b.shared.settled().conflicts if c.entry.kind == "call"]
        assert [(c.entry.counter, c.winner and c.winner.counter) for c in lost] == [(3, 1)]

        # after the rejoin the three counters call in the one fair order
        settled = a.shared.settled()
        day = local_day(a.now_ms()).isoformat()
        expected = [t.number for t in settled.call_order(day, QUEUES, QueuePolicy("strict"))]
        assert by_number(tickets)[expected[0]].priority  # strict, the agents' default
        called = []
        for k, (kiosk, counter) in enumerate([(a, 2), (b, 3), (a, 1)] * 5):
            if k == len(expected):
                break
            called.append(kiosk.counter(counter, "next", officer="o")["ticket"]["number"])
            other = seen_b if kiosk is a else seen_a
            other.wait(lambda ts, n=called[-1]: by_number(ts)[n].state == "called")
        assert called == expected
        assert agent_a.healthy and agent_b.healthy
        assert a.telemetry()["office_queue"] == {
            "queue": "tanphu", "connected": True, "entries": len(a.shared.entries()),
            "conflicts": len(a.shared.settled().conflicts), "refused": 0,
        }  # fmt: skip
    finally:
        for thing in reversed(opened):
            thing.close()


@pytest.mark.parametrize(
    ("kiosk", "error"),
    [
        ({"queue_kiosks": ["kiosk-a"]}, "queue_kiosks needs queue, the office queue's id"),
        ({"queue": "tanphu"}, "queue 'tanphu': list its kiosks in queue_kiosks"),
        ({"queue": "tanphu", "queue_kiosks": ["kiosk-a", "kiosk-a"]},
         "queue_kiosks: list each kiosk once; repeated: kiosk-a"),
        ({"queue": "Tân Phú", "queue_kiosks": ["kiosk-a"]}, "queue\\n  String should match"),
        ({"queue": "tanphu", "queue_kiosks": [f"k{i}" for i in range(10)]}, "queue_kiosks\\n"),
    ],
)  # fmt: skip
def test_bad_queue_configuration_is_refused_naming_the_key(kiosk: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        convert({"office_address": "192.168.1.21", **kiosk}, KioskSection, strict=False)


def test_a_kiosk_missing_from_its_queue_is_refused_saying_how_to_fix_it() -> None:
    cfg = convert(
        {"office_address": "192.168.1.21", "queue": "tanphu", "queue_kiosks": ["kiosk-b"]},
        KioskSection,
        strict=False,
    )
    with pytest.raises(ValueError, match=r"does not list this kiosk \('kiosk-a'\).*--queue"):
        cfg.queue_slot("kiosk-a")


def test_a_peers_bad_messages_are_refused_and_the_next_good_one_merges(
    office_site: Site, office_broker: Mosquitto, tmp_path: Path
) -> None:
    mqtt = {d: kiosk_config(office_site, d)["mqtt"] for d in ("kiosk-a", "kiosk-b")}
    queue = SharedQueue(tmp_path / "a.sqlite", queue="tanphu", kiosk="kiosk-a",
                        kiosks=["kiosk-a", "kiosk-b"], topics=Topics())  # fmt: skip
    clients = Clients(office_broker.host, office_broker.port)
    try:
        queue.connect(
            office_broker.host, office_broker.port, "kiosk-a", mqtt["kiosk-a"]["password"]
        )
        assert queue.wait_link(up=True, timeout_s=WAIT_S)
        b = clients.connect("kiosk-b", mqtt["kiosk-b"]["password"])
        topic = "xaso/dev/kiosk-b/office"
        issue = OfficeEntry(seq=1, at_ms=T0, kind="issue", ticket="t-b-1", day="2025-12-02",
                            service="ho-tich", n=2, number="A002")  # fmt: skip
        for bad in (
            b"not json",
            office_entries("tanphu", "kiosk-a", [issue]),  # b writing as a
            office_entries("phuoc-an", "kiosk-b", [issue]),  # another office
            _entries(counter=0).replace(b'"kiosk-a"', b'"kiosk-b"'),
        ):
            publish(b, topic, bad)
        publish(b, topic, office_entries("tanphu", "kiosk-b", [issue]))
        assert queue.wait_for(lambda s, _log: "t-b-1" in s.tickets, WAIT_S)
        assert queue.refused == 4
        # the same name with other content is refused too, and the log keeps the first
        other = msgspec.structs.replace(issue, n=4, number="A004")
        publish(b, topic, office_entries("tanphu", "kiosk-b", [other]))
        later = msgspec.structs.replace(
            issue, **{"seq": 2, "ticket": "t-b-2", "n": 4, "number": "A004"}
        )
        publish(b, topic, office_entries("tanphu", "kiosk-b", [later]))
        assert queue.wait_for(lambda s, _log: "t-b-2" in s.tickets, WAIT_S)
        assert queue.refused == 5 and queue.settled().tickets["t-b-1"].number == "A002"
    finally:
        clients.close_all()
        queue.close()


def test_the_counter_page_says_when_its_call_lost_to_another_kiosks_counter(
    office_site: Site, office_broker: Mosquitto, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from kiosk.role import serve_pages
    from tests.kiosk_helpers import OFFICERS
    from tests.test_kiosk_browser import signed_in, wait_serving

    clock = KioskClock()
    opened: list = []
    kiosks = {}
    try:
        for device in ("kiosk-a", "kiosk-b"):
            printer = VirtualPrinter(tmp_path / device / "printed").start()
            link = LossyLink(
                office_broker.host, office_broker.port, seed=3, latency_ms=None
            ).start()
            opened += [printer, link]
            shared = SharedQueue(
                tmp_path / device / "office.sqlite", queue="tanphu", kiosk=device,
                kiosks=["kiosk-a", "kiosk-b"], topics=Topics(),
            )  # fmt: skip
            cfg = convert({"printer_url": printer.path, "status_poll_s": 0.1, "voice": "off",
                 "web_host": "127.0.0.1", "web_port": free_port(), "officers": OFFICERS,
                 "queue": "tanphu", "queue_kiosks": ["kiosk-a", "kiosk-b"]},
                 KioskSection, strict=False)  # fmt: skip
            (tmp_path / device / "state").mkdir(parents=True)
            kiosk = Kiosk(cfg, tmp_path / device / "state", lambda _b: None, clock,
                          serve=serve_pages, shared=shared)  # fmt: skip
            kiosk.start()
            opened.append(kiosk)
            mqtt = kiosk_config(office_site, device)["mqtt"]
            shared.connect("127.0.0.1", link.port, mqtt["username"], mqtt["password"])
            assert shared.wait_link(up=True, timeout_s=WAIT_S)
            kiosks[device] = (kiosk, link, Mirrored(kiosk))
        (a, _, _), (b, link_b, seen_b) = kiosks.values()
        base_b = f"http://127.0.0.1:{b.cfg.web_port}"
        wait_serving(base_b)
        a.issue("ho-tich")
        seen_b.wait(lambda ts: len(ts) == 1)
        link_b.partition(refuse=True)
        link_b.drop()
        assert b.shared is not None and b.shared.wait_link(up=False, timeout_s=WAIT_S)
        clock.ms += 1_000
        assert a.counter(1, "next")["ticket"]["number"] == "A001"
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = signed_in(browser, f"{base_b}/counter/3", "#next")
                clock.ms += 1_000
                page.click("#next")  # b does not know: counter 3 calls A001 too
                expect(page.locator("#current")).to_have_text("A001")
                expect(page.locator("#taken")).to_be_hidden()
                link_b.heal()
                expect(page.locator("#taken")).to_have_text(
                    "Số A001 đã được quầy 1 gọi trước (lúc mất kết nối giữa các máy):"
                    " xin gọi số tiếp theo"
                )
                expect(page.locator("#current")).to_have_text("—")
                page.click("#next")
                expect(page.locator("#taken")).to_be_hidden()
                expect(page.locator("#msg")).to_have_text("Không còn ai đang chờ")
            finally:
                browser.close()
    finally:
        for thing in reversed(opened):
            thing.close()


def test_a_booked_ticket_goes_into_the_shared_queue_and_is_called_at_its_slot_by_either_kiosk(
    office_site: Site, office_broker: Mosquitto, tmp_path: Path
) -> None:
    from protocol.commands import BookingsSet

    clock = KioskClock()  # Monday 23/11/2026 09:00
    slot = clock.ms + 30 * 60_000  # booked for 09:30
    booked = msgspec.convert({"version": 1, "bookings": [
        {"code": "K7M2QX", "service": "ho-tich", "slot_ms": slot, "slot_min": 15}]},
            BookingsSet)  # fmt: skip
    made: list[tuple[Kiosk, LossyLink, VirtualPrinter]] = []
    events: dict[str, list[dict[str, object]]] = {"kiosk-a": [], "kiosk-b": []}
    try:
        for device in ("kiosk-a", "kiosk-b"):
            printer = VirtualPrinter(tmp_path / device / "printed").start()
            link = LossyLink(office_broker.host, office_broker.port, seed=2, latency_ms=None)
            link.start()
            mqtt = kiosk_config(office_site, device)["mqtt"]
            shared = SharedQueue(
                tmp_path / device / "office.sqlite", queue="tanphu", kiosk=device,
                kiosks=["kiosk-a", "kiosk-b"], topics=Topics(),
            )  # fmt: skip
            cfg = convert({"printer_url": printer.path, "status_poll_s": 0.1, "voice": "off",
                 "web_host": "127.0.0.1", "queue": "tanphu",
                 "queue_kiosks": ["kiosk-a", "kiosk-b"]}, KioskSection, strict=False)  # fmt: skip
            (tmp_path / device / "state").mkdir(parents=True)
            record = events[device]
            kiosk = Kiosk(cfg, tmp_path / device / "state",
                          lambda b, r=record: r.append(b.wire()), clock, shared=shared)  # fmt: skip
            kiosk.start()
            shared.connect("127.0.0.1", link.port, mqtt["username"], mqtt["password"])
            assert shared.wait_link(up=True, timeout_s=WAIT_S)
            made.append((kiosk, link, printer))
        (a, _, _), (b, _, _) = made
        a.bookings.apply("", booked)
        seen_a, seen_b = Mirrored(a), Mirrored(b)
        assert a.issue("ho-tich")["number"] == "A001"  # walk-ins at both doors
        seen_b.wait(lambda ts: len(ts) == 1)
        clock.ms += 60_000
        assert b.issue("ho-tich")["number"] == "A002"
        clock.ms += 60_000
        redeemed = a.redeem_booking("k7m2qx")  # typed at kiosk a, 09:02
        assert redeemed["number"] == "A003" and redeemed["booked"]
        issued = [e for e in events["kiosk-a"] if e.get("number") == "A003"]
        assert issued and issued[0]["booked_slot_ms"] == slot  # for the controller's reports
        walk_in = next(e for e in events["kiosk-a"] if e.get("number") == "A001")
        assert "booked_slot_ms" not in walk_in
        seen_b.wait(lambda ts: len(ts) == 3)
        assert b.bookings.slots_today(clock.ms) == {"A003": slot}  # b knows the slot from the log
        b.bookings.apply("", booked)  # were b given the list too, the code is used
        with pytest.raises(KioskError) as used:
            b.redeem_booking("K7M2QX")
        assert used.value.code == "booking_used"
        clock.ms += 60_000
        assert b.issue("ho-tich")["number"] == "A004"
        # kiosk b's counter calls the walk-ins, not the booked citizen before the slot
        calls = []
        for _ in range(2):
            clock.ms += 60_000
            calls.append(b.counter(1, "next")["ticket"]["number"])
        assert calls == ["A001", "A002"]
        clock.ms = slot + 60_000  # 09:31: due, before A004 who came earlier
        assert b.counter(1, "next")["ticket"]["number"] == "A003"
        seen_a.wait(lambda ts: by_number(ts)["A003"].counter == 1)
        assert a.counter(2, "next")["ticket"]["number"] == "A004"
    finally:
        for kiosk, link, printer in made:
            kiosk.close()
            link.close()
            printer.close()
