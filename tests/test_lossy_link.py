"""The lossy link itself (tests/lossy_link.py): a fault the agents' tests rely on must happen.

An echo server stands in for the broker, so each test can see what reached it
and what came back: latency keeps byte order, a drop resets both sides, a stall
passes nothing and no FIN, a partition holds what is in flight until it heals.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.lossy_link import LossyLink, Plan, plan


class Echo(socketserver.ThreadingTCPServer):
    """Echoes every byte back; notes how each connection ended ('eof' or 'reset')."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.ends: list[str] = []
        self.received = bytearray()
        self.ended = threading.Condition()
        super().__init__(("127.0.0.1", 0), EchoHandler)


class EchoHandler(socketserver.BaseRequestHandler):
    server: Echo

    def handle(self) -> None:
        end = "eof"
        try:
            while data := self.request.recv(65536):
                self.server.received += data
                self.request.sendall(data)
        except ConnectionResetError:
            end = "reset"
        with self.server.ended:
            self.server.ends.append(end)
            self.server.ended.notify_all()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def link(echo: Echo) -> Iterator[LossyLink]:
    lossy = LossyLink("127.0.0.1", echo.server_address[1], seed=7).start()
    yield lossy
    lossy.close()


def connect(link: LossyLink, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", link.port), timeout=timeout_s)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            raise AssertionError(f"connection closed after {len(got)} of {n} bytes")
        got += chunk
    return bytes(got)


def silent(sock: socket.socket, for_s: float) -> bool:
    """Nothing arrives, neither data nor a FIN nor an RST, for ``for_s``."""
    sock.settimeout(for_s)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    return False


def test_latency_delays_each_chunk_and_keeps_the_byte_order(link: LossyLink) -> None:
    sent = b"".join(f"chunk {i:03d};".encode() for i in range(60))
    with connect(link) as sock:
        t0 = time.monotonic()
        sock.sendall(b"x")
        read_exactly(sock, 1)
        round_trip_s = time.monotonic() - t0
        for i in range(0, len(sent), 10):  # many small chunks, each with its own delay
            sock.sendall(sent[i : i + 10])
            time.sleep(0.005)
        assert read_exactly(sock, len(sent)) == sent
    assert round_trip_s >= 0.2  # at least 100 ms each way


def test_a_drop_resets_both_sides(link: LossyLink, echo: Echo) -> None:
    with connect(link) as sock:
        sock.sendall(b"hello")
        read_exactly(sock, 5)
        assert link.drop() == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    with echo.ended:
        assert echo.ended.wait_for(lambda: echo.ends == ["reset"], 10)


def test_a_stall_passes_nothing_either_way_and_no_fin(link: LossyLink, echo: Echo) -> None:
    sock = connect(link)
    sock.sendall(b"before")
    read_exactly(sock, 6)
    assert link.stall() == 1
    sock.sendall(b"after")
    assert silent(sock, 1.5)
    sock.close()  # the FIN stops at the link, as if the far end had vanished
    time.sleep(1.0)
    assert bytes(echo.received) == b"before" and echo.ends == []
    with connect(link) as fresh:  # new connections still work
        fresh.sendall(b"again")
        assert read_exactly(fresh, 5) == b"again"


@pytest.mark.parametrize("refuse", [True, False])
def test_a_partition_holds_what_is_in_flight_until_it_heals(
    link: LossyLink, echo: Echo, refuse: bool
) -> None:
    with connect(link) as sock:
        sock.sendall(b"one")
        read_exactly(sock, 3)
        link.partition(refuse)
        sock.sendall(b"two")
        if refuse:
            # accepted, then reset: on a busy machine the reset can already meet the connect
            with pytest.raises(ConnectionResetError), connect(link) as newcomer:
                newcomer.sendall(b"hello?")
                newcomer.recv(1)
        else:
            with connect(link) as newcomer:
                newcomer.sendall(b"hello?")
                assert silent(newcomer, 1.0)
        assert silent(sock, 1.0)
        assert bytes(echo.received) == b"one"
        link.heal()
        assert read_exactly(sock, 3) == b"two"
    assert link.counts["refused" if refuse else "blackholed"] == 1


def test_a_plan_is_the_same_for_the_same_seed_and_its_faults_never_overlap() -> None:
    spans = [(2.0, 5.0), (30.0, 60.0)]

    def made(seed: int) -> Plan:
        return plan(
            seed, drops=2, stalls=2, partitions_s=spans, gap_s=(4.0, 10.0), after_stall_s=5.0
        )

    one = made(11)
    assert one == made(11) and one != made(12)
    kinds = sorted(f.kind for f in one.faults)
    assert kinds == ["drop", "drop", "partition", "partition", "stall", "stall"]
    # each fault ends (a stall: once noticed) at least one shortest gap before the next
    ends = [f.at_s + f.duration_s + (5.0 if f.kind == "stall" else 0.0) for f in one.faults]
    starts = [f.at_s for f in one.faults]
    assert all(start >= end + 4.0 - 0.1 for start, end in zip(starts[1:], ends, strict=False))
    assert one.length_s >= ends[-1] + 4.0 - 0.1
    longest = max(f.duration_s for f in one.faults)
    assert 30.0 <= longest <= 60.0
