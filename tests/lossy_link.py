"""A TCP proxy with a countryside 4G link's faults, between agents and the broker (issue 11).

An agent's [mqtt] port points at the link, which forwards to the real broker.
On command it delays every chunk (byte order kept), resets connections (RST),
stalls them half-open (nothing passes either way, and neither side hears a
FIN or an RST: only keepalives can tell), and partitions: the connections
there pause until it heals, and new ones are refused (accepted, then
reset) or blackholed (accepted, then never answered). A `Plan` built from a
seed scripts the faults, and the same seed draws the latencies, so a run can
be repeated.

Standard library only. The link runs its own asyncio loop in a thread; its
methods may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Kind = Literal["drop", "stall", "partition"]


@dataclass(frozen=True)
class Fault:
    kind: Kind
    at_s: float  # from the start of the plan
    duration_s: float = 0.0  # partitions only
    refuse: bool = False  # a partition that refuses new connections; else it blackholes them

    def __str__(self) -> str:
        if self.kind != "partition":
            return f"{self.at_s:6.1f} s  {self.kind}"
        how = "refusing" if self.refuse else "blackholing"
        return f"{self.at_s:6.1f} s  partition {self.duration_s:.1f} s, {how} new connections"


@dataclass(frozen=True)
class Plan:
    faults: tuple[Fault, ...]
    length_s: float

    def __str__(self) -> str:
        return "\n".join([*map(str, self.faults), f"{self.length_s:6.1f} s  end"])


def plan(
    seed: int,
    *,
    drops: int,
    stalls: int,
    partitions_s: list[tuple[float, float]],
    gap_s: tuple[float, float],
    after_stall_s: float = 0.0,
) -> Plan:
    """The faults in an order drawn from ``seed``, one at a time, with a random ``gap_s`` of
    plain latency before each and at the end; each partition lasts a time drawn from its
    (shortest, longest) range and refuses or blackholes new connections at random. A stall
    is followed by ``after_stall_s`` more, the time its peers take to notice, so that the
    next fault finds them connected again."""
    rng = random.Random(seed)
    kinds: list[tuple[Kind, tuple[float, float] | None]] = [
        *[("drop", None)] * drops,
        *[("stall", None)] * stalls,
        *[("partition", span) for span in partitions_s],
    ]
    rng.shuffle(kinds)
    faults, at = [], 0.0
    for kind, span in kinds:
        at += rng.uniform(*gap_s)
        if span is None:
            faults.append(Fault(kind, round(at, 1)))
            at += after_stall_s if kind == "stall" else 0.0
            continue
        duration = round(rng.uniform(*span), 1)
        faults.append(Fault(kind, round(at, 1), duration, refuse=rng.random() < 0.5))
        at += duration
    return Plan(tuple(faults), round(at + rng.uniform(*gap_s), 1))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: SO_LINGER on, with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    dead: bool = False  # stalled for good: never forwards, never closes (until the link does)
    closed: bool = False

    def __post_init__(self) -> None:
        self.flowing.set()

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class LossyLink:
    """Listens on 127.0.0.1:``port`` and forwards to ``upstream``, with the faults asked for."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        seed: int,
        latency_ms: tuple[float, float] | None = (100.0, 600.0),
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency_ms = latency_ms
        self.port = 0
        self.counts: Counter[str] = Counter()  # accepted, reset, stalled, refused, blackholed
        self._rng = random.Random(seed)
        self._conns: set[_Connection] = set()
        self._partition: Literal["refuse", "blackhole"] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lossy-link")
        self._server: asyncio.Server | None = None

    # control, from any thread

    def start(self) -> LossyLink:
        self._thread.start()
        self._server = self._call(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop(self) -> int:
        """Reset every live connection, both ways; returns how many."""
        return self._call(self._drop())

    def stall(self) -> int:
        """Stall every live connection half-open, for good; returns how many."""
        return self._call(self._stall())

    def partition(self, refuse: bool) -> None:
        """Pause every connection until `heal`; new ones are refused or blackholed."""
        self._call(self._begin_partition("refuse" if refuse else "blackhole"))

    def heal(self) -> None:
        self._call(self._heal())

    def run(self, plan: Plan) -> list[str]:
        """Play ``plan`` on this link (blocking); what was done, with times, for the report."""
        done: list[str] = []
        start = time.monotonic()

        def until(offset_s: float) -> None:
            time.sleep(max(0.0, start + offset_s - time.monotonic()))

        for fault in plan.faults:
            until(fault.at_s)
            if fault.kind == "drop":
                done.append(f"{fault}: {self.drop()} connection(s) reset")
            elif fault.kind == "stall":
                done.append(f"{fault}: {self.stall()} connection(s) stalled")
            else:
                self.partition(fault.refuse)
                until(fault.at_s + fault.duration_s)
                self.heal()
                done.append(str(fault))
        until(plan.length_s)
        return done

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # on the link's loop

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _drop(self) -> int:
        live = [c for c in self._conns if not c.dead and not c.closed]
        for conn in live:
            self._finish(conn, reset=True)
        self.counts["reset"] += len(live)
        return len(live)

    async def _stall(self) -> int:
        live = [c for c in self._conns if not c.dead and not c.closed]
        for conn in live:
            conn.dead = True
            conn.flowing.clear()
        self.counts["stalled"] += len(live)
        return len(live)

    async def _begin_partition(self, mode: Literal["refuse", "blackhole"]) -> None:
        self._partition = mode
        for conn in self._conns:
            conn.flowing.clear()

    async def _heal(self) -> None:
        self._partition = None
        for conn in self._conns:
            if not conn.dead:
                conn.flowing.set()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._finish(conn, reset=False)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts["accepted"] += 1
        conn = _Connection(writer)
        self._conns.add(conn)
        if self._partition == "refuse":
            self.counts["refused"] += 1
            self._finish(conn, reset=True)
            return
        if self._partition == "blackhole":  # connected, and never a byte back
            self.counts["blackholed"] += 1
            conn.dead = True
            return
        try:
            up_reader, conn.upstream = await asyncio.open_connection(*self.upstream)
            if conn.closed:  # dropped while the broker answered
                _reset(conn.upstream)
                return
            if conn.dead:  # stalled while the broker answered
                return
            await asyncio.gather(
                self._pipe(conn, reader, conn.upstream),
                self._pipe(conn, up_reader, writer),
            )
        except OSError:
            self._finish(conn, reset=True)
            return
        except asyncio.CancelledError:  # the link is closing: not an error of this handler
            return
        if not conn.dead:
            self._finish(conn, reset=False)

    async def _pipe(
        self, conn: _Connection, src: asyncio.StreamReader, dst: asyncio.StreamWriter
    ) -> None:
        """One direction: each chunk is held for its own latency, and never overtakes the
        one before it; a FIN is passed on in its place; an RST resets the other side too."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def read() -> None:
            due = 0.0
            while True:
                await conn.flowing.wait()
                try:
                    data = await src.read(65536)
                except OSError:
                    data = None
                if conn.dead:
                    return
                if data is None:
                    self._finish(conn, reset=True)
                    return
                low, high = self.latency_ms or (0.0, 0.0)
                due = max(due, loop.time() + self._rng.uniform(low, high) / 1000)
                await queue.put((due, data))
                if not data:
                    return

        async def write() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                await conn.flowing.wait()
                if conn.dead or conn.closed:
                    return
                try:
                    if not data:
                        if dst.can_write_eof():
                            dst.write_eof()
                        return
                    dst.write(data)
                    await dst.drain()
                except OSError:
                    self._finish(conn, reset=True)
                    return

        reader = asyncio.ensure_future(read())
        await write()
        reader.cancel()

    def _finish(self, conn: _Connection, *, reset: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.flowing.set()  # wake its pipes, which see `closed` and end
        for w in conn.writers():
            if reset:
                _reset(w)
            else:
                w.close()
        self._conns.discard(conn)
