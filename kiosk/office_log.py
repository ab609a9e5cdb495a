"""One number series and one queue for the kiosks of an office, through a split.

Pure: no I/O and no clock. The kiosks of an office share an append-only log of
entries (a ticket issued, called, skipped, served, transferred). Each entry is
named by its kiosk and that kiosk's own sequence number, so two logs merge by
union: the merge is commutative, associative and idempotent, and every kiosk
that has seen the same entries computes the same queue. The rules
(docs/kiosk.md, "Several kiosks, one queue"):

- **Numbers.** Kiosk ``slot`` of ``slots`` issues only the numbers ``n`` with
  ``(n - 1) % slots == slot``, above every number of that service and day it
  knows of. Two kiosks can never issue the same number, together or apart.
- **Order.** Entries are ordered by ``(at_ms, kiosk, seq)``. ``at_ms`` is a
  hybrid clock (``stamp``): never below an entry the kiosk already knew, so an
  act sorts after what it acted on even when the kiosks' clocks differ.
- **Settling.** Entries are replayed in that order; an act the ticket's state
  no longer allows (the same ticket called at both sides of a split) is set
  aside as a ``Conflict``: the earliest call wins, and the counter whose call
  lost is told.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from kiosk.numbering import QueuePolicy, call_order

Kind = Literal["issue", "call", "skip", "serve", "transfer"]
KINDS: tuple[Kind, ...] = ("issue", "call", "skip", "serve", "transfer")
# the ticket states an act needs: the same transitions as kiosk.ticket_store
_ALLOWED: dict[Kind, tuple[str, ...]] = {
    "call": ("waiting", "skipped"),
    "skip": ("called",),
    "serve": ("called",),
    "transfer": ("waiting", "called"),
}


class LogError(ValueError):
    """Entries that cannot belong to one office's log (two different entries under one name)."""


@dataclass(frozen=True)
class Entry:
    """One act, as the kiosk that did it wrote it. ``ticket`` is the ticket's id;
    ``service``, ``day``, ``n``, ``number`` and ``priority`` are set on an issue,
    ``counter`` on a call, ``queue`` on a transfer (the service it moves to)."""

    kiosk: str
    seq: int
    at_ms: int
    kind: Kind
    ticket: str
    day: str = ""
    service: str = ""
    n: int = 0
    number: str = ""
    priority: bool = False
    counter: int = 0
    queue: str = ""
    officer: str = ""
    booking: str = ""  # an issue for a booked citizen: the code and the slot's start
    slot_ms: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.kiosk, self.seq)

    @property
    def order(self) -> tuple[int, str, int]:
        return (self.at_ms, self.kiosk, self.seq)


@dataclass(frozen=True)
class QueuedTicket:
    """A ticket as the settled log has it (what numbering's call policy reads)."""

    id: str
    day: str
    service: str
    queue: str
    n: int
    number: str
    priority: bool
    issued_ms: int
    kiosk: str
    state: str = "waiting"
    counter: int = 0
    called_ms: int = 0
    booking: str = ""  # booked ahead: its code and slot (kiosk/booked.py calls it then)
    slot_ms: int = 0


@dataclass(frozen=True)
class Conflict:
    """An act set aside at settling: ``entry`` lost to the state ``winner`` left."""

    entry: Entry
    state: str  # the ticket's state when the act came to be replayed
    winner: Entry | None  # the call that holds the ticket (the earlier one), if any


Log = Mapping[tuple[str, int], Entry]


def merge(*logs: Log | Iterable[Entry]) -> dict[tuple[str, int], Entry]:
    """The union of logs; the same name with different entries is refused."""
    out: dict[tuple[str, int], Entry] = {}
    for log in logs:
        for e in log.values() if isinstance(log, Mapping) else log:
            known = out.setdefault(e.key, e)
            if known != e:
                raise LogError(f"kiosk {e.kiosk!r} wrote two different entries as #{e.seq}")
    return out


def stamp(now_ms: int, log: Log) -> int:
    """The time of a new entry: the kiosk's clock, but after every entry it knows."""
    return stamp_after(now_ms, max((e.at_ms for e in log.values()), default=-1))


def stamp_after(now_ms: int, latest_ms: int) -> int:
    return max(now_ms, latest_ms + 1)


def next_seq(log: Log, kiosk: str) -> int:
    return 1 + max((seq for (k, seq) in log if k == kiosk), default=0)


def have(log: Log) -> dict[str, int]:
    """Per kiosk, the highest seq up to which this log has every entry (for a sync)."""
    seqs: dict[str, set[int]] = {}
    for k, seq in log:
        seqs.setdefault(k, set()).add(seq)
    out: dict[str, int] = {}
    for k, known in seqs.items():
        n = 0
        while n + 1 in known:
            n += 1
        out[k] = n
    return out


def missing(log: Log, kiosk: str, peer_has: Mapping[str, int]) -> list[Entry]:
    """``kiosk``'s own entries that a peer, by its ``have``, does not hold yet."""
    floor = peer_has.get(kiosk, 0)
    return sorted((e for (k, s), e in log.items() if k == kiosk and s > floor), key=lambda e: e.seq)


def owns(n: int, slot: int, slots: int) -> bool:
    """Whether kiosk ``slot`` (0-based) of ``slots`` may issue number ``n``."""
    return n >= 1 and (n - 1) % slots == slot


def next_number(log: Log, service: str, day: str, slot: int, slots: int) -> int:
    """The number kiosk ``slot`` issues next: its own, above every one it knows of."""
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} is not one of 0..{slots - 1}")
    top = max(
        (e.n for e in log.values() if e.kind == "issue" and e.service == service and e.day == day),
        default=0,
    )
    return number_after(top, slot, slots)


def number_after(top: int, slot: int, slots: int) -> int:
    """The smallest number of kiosk ``slot`` above ``top``."""
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} is not one of 0..{slots - 1}")
    return top + 1 + (slot - top) % slots


@dataclass(frozen=True)
class Settled:
    """The office's queue as one log has it: the tickets and the acts set aside."""

    tickets: dict[str, QueuedTicket]
    conflicts: tuple[Conflict, ...]

    def waiting(self, day: str, queues: Sequence[str]) -> list[QueuedTicket]:
        return [
            t for t in self.tickets.values()
            if t.day == day and t.state == "waiting" and t.queue in queues
        ]  # fmt: skip

    def normal_since_priority(self, day: str, queues: Sequence[str]) -> int:
        called = sorted(
            (
                t
                for t in self.tickets.values()
                if t.day == day and t.queue in queues and t.called_ms
            ),
            key=lambda t: t.called_ms,
        )
        run = 0
        for t in called:
            run = 0 if t.priority else run + 1
        return run

    def call_order(
        self, day: str, queues: Sequence[str], policy: QueuePolicy
    ) -> list[QueuedTicket]:
        """Who is called next at a counter of these queues: numbering's rule, by issue time."""
        return call_order(
            self.waiting(day, queues), policy, self.normal_since_priority(day, queues)
        )


def allows(t: QueuedTicket | None, kind: Kind, counter: int) -> bool:
    """Whether ``kind`` at ``counter`` applies to ticket ``t`` as it stands (one rule for a
    kiosk acting and for the settling of what it did)."""
    if t is None or kind == "issue" or t.state not in _ALLOWED[kind]:
        return False
    return kind not in ("skip", "serve") or t.counter == counter


def settle(log: Log) -> Settled:
    """Replay the log in ``(at_ms, kiosk, seq)`` order; what no longer applies is a conflict."""
    replay = Replay()
    replay.extend(log.values())
    return replay.settled()


class Replay:
    """A settling that goes on: entries that sort after the last one replayed are applied
    on top (a kiosk's own acts, a peer's acts while together); ``extend`` refuses any
    that would sort earlier, and the caller replays the whole log instead."""

    def __init__(self) -> None:
        self.tickets: dict[str, QueuedTicket] = {}
        self.conflicts: list[Conflict] = []
        self.last: tuple[int, str, int] = (-1, "", 0)
        self._last_call: dict[str, Entry] = {}

    def settled(self) -> Settled:
        return Settled(dict(self.tickets), tuple(self.conflicts))

    def extend(self, entries: Iterable[Entry]) -> bool:
        """Apply ``entries`` in order; False (and nothing applied) if one sorts too early."""
        ordered = sorted(entries, key=lambda e: e.order)
        if ordered and ordered[0].order <= self.last:
            return False
        for e in ordered:
            self._apply(e)
        if ordered:
            self.last = ordered[-1].order
        return True

    def _apply(self, e: Entry) -> None:
        tickets, last_call = self.tickets, self._last_call
        if e.kind == "issue":
            if e.ticket in tickets:
                self.conflicts.append(Conflict(e, tickets[e.ticket].state, last_call.get(e.ticket)))
                return
            tickets[e.ticket] = QueuedTicket(
                e.ticket, e.day, e.service, e.service, e.n, e.number, e.priority, e.at_ms, e.kiosk,
                booking=e.booking, slot_ms=e.slot_ms,
            )  # fmt: skip
            return
        t = tickets.get(e.ticket)
        if not allows(t, e.kind, e.counter):
            self.conflicts.append(
                Conflict(e, "unknown" if t is None else t.state, last_call.get(e.ticket))
            )
            return
        assert t is not None
        if e.kind == "call":
            t = replace(t, state="called", counter=e.counter, called_ms=e.at_ms)
            last_call[e.ticket] = e
        elif e.kind == "skip":
            t = replace(t, state="skipped")
        elif e.kind == "serve":
            t = replace(t, state="served")
        else:
            t = replace(t, state="waiting", queue=e.queue, counter=0, called_ms=0)
            last_call.pop(e.ticket, None)
        tickets[e.ticket] = t
