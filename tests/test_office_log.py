"""kiosk.office_log: one number series and one queue for several kiosks, through splits."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.numbering import QueuePolicy
from kiosk.office_log import (
    Entry,
    LogError,
    Replay,
    have,
    merge,
    missing,
    next_number,
    next_seq,
    number_after,
    owns,
    settle,
    stamp,
)

DAY = "2026-12-02"
STRICT = QueuePolicy("strict")


def issue(kiosk: str, seq: int, at: int, n: int, *, service: str = "ho-tich", prio: bool = False):
    return Entry(kiosk, seq, at, "issue", f"{kiosk}-{seq}", DAY, service, n, f"A{n:03d}", prio)


def act(kiosk: str, seq: int, at: int, kind: str, ticket: str, *, counter: int = 1) -> Entry:
    return Entry(kiosk, seq, at, kind, ticket, counter=counter)  # type: ignore[arg-type]


def as_log(*entries: Entry) -> dict[tuple[str, int], Entry]:
    return merge(entries)


@pytest.mark.parametrize("slots", [1, 2, 3, 5])
def test_each_kiosk_issues_its_own_residue_above_every_known_number(slots: int) -> None:
    for slot in range(slots):
        for top in range(0, 12):
            log = as_log(issue("x", 1, 0, top)) if top else {}
            n = next_number(log, "ho-tich", DAY, slot, slots)
            assert n > top and owns(n, slot, slots)
            assert not any(owns(m, slot, slots) for m in range(top + 1, n))
            assert [s for s in range(slots) if owns(n, s, slots)] == [slot]


def test_next_number_counts_only_its_service_and_day_and_refuses_a_bad_slot() -> None:
    log = as_log(issue("a", 1, 0, 7), issue("a", 2, 0, 40, service="dat-dai"))
    assert next_number(log, "ho-tich", DAY, 0, 2) == 9
    assert next_number(log, "ho-tich", "2026-12-03", 0, 2) == 1
    with pytest.raises(ValueError, match=r"slot 2 is not one of 0\.\.1"):
        next_number(log, "ho-tich", DAY, 2, 2)


def test_stamp_never_goes_below_what_the_kiosk_knows() -> None:
    log = as_log(issue("a", 1, 5_000, 1))
    assert stamp(9_000, log) == 9_000
    assert stamp(1_000, log) == 5_001  # a clock behind its peer's: after the entry it saw
    assert stamp(1_000, {}) == 1_000


def test_merge_refuses_two_entries_under_one_name() -> None:
    with pytest.raises(LogError, match="kiosk 'a' wrote two different entries as #1"):
        merge([issue("a", 1, 0, 1)], [issue("a", 1, 0, 3)])


def test_have_counts_only_an_unbroken_run_and_missing_sends_the_rest() -> None:
    log = as_log(issue("a", 1, 0, 1), issue("a", 2, 0, 3), issue("a", 4, 0, 7), issue("b", 1, 0, 2))
    assert have(log) == {"a": 2, "b": 1}
    assert [e.seq for e in missing(log, "a", {"a": 1})] == [2, 4]
    assert missing(log, "b", {"b": 1}) == []
    assert next_seq(log, "a") == 5 and next_seq(log, "c") == 1


def test_a_ticket_called_on_both_sides_goes_to_the_earliest_call() -> None:
    t = issue("a", 1, 1_000, 1)
    late = act("b", 1, 3_000, "call", t.ticket, counter=3)
    early = act("a", 2, 2_000, "call", t.ticket, counter=1)
    served_by_loser = act("b", 2, 4_000, "serve", t.ticket, counter=3)
    for order in itertools.permutations([t, late, early, served_by_loser]):
        s = settle(as_log(*order))
        assert s.tickets[t.ticket].state == "called" and s.tickets[t.ticket].counter == 1
        assert [(c.entry, c.state, c.winner) for c in s.conflicts] == [
            (late, "called", early),
            (served_by_loser, "called", early),
        ]


def test_an_act_on_an_unknown_ticket_is_set_aside() -> None:
    s = settle(as_log(act("b", 1, 1, "call", "nobody")))
    assert s.tickets == {} and s.conflicts[0].state == "unknown"


def test_skew_stamped_acts_sort_after_the_issue_they_acted_on() -> None:
    t = issue("a", 1, 50_000, 1)  # kiosk a's clock is 40 s ahead of b's
    log = as_log(t)
    call = act("b", 1, stamp(10_000, log), "call", t.ticket, counter=2)
    s = settle(merge(log, [call]))
    assert s.conflicts == () and s.tickets[t.ticket].state == "called"


def test_transfer_keeps_the_place_by_issue_time() -> None:
    a1, a2 = issue("a", 1, 1_000, 1), issue("a", 2, 2_000, 3)
    moved = Entry("b", 1, 3_000, "transfer", a1.ticket, queue="dat-dai")
    d = issue("b", 2, 2_500, 2, service="dat-dai")
    s = settle(as_log(a1, a2, moved, d))
    assert [t.number for t in s.call_order(DAY, ["dat-dai"], STRICT)] == ["A001", "A002"]
    assert [t.number for t in s.call_order(DAY, ["ho-tich"], STRICT)] == ["A003"]


# --- random splits and interleavings ---------------------------------------------------------


@dataclass
class Kiosk:
    name: str
    slot: int
    skew_ms: int
    log: dict[tuple[str, int], Entry] = field(default_factory=dict)

    def append(self, now_ms: int, kind: str, ticket: str, **kw: object) -> Entry:
        e = Entry(self.name, next_seq(self.log, self.name), stamp(now_ms + self.skew_ms, self.log),
                  kind, ticket, **kw)  # type: ignore[arg-type]  # fmt: skip
        self.log[e.key] = e
        return e


SERVICES = ("ho-tich", "dat-dai")
QUEUES = list(SERVICES)
op = st.one_of(
    st.tuples(st.just("issue"), st.integers(0, 2), st.sampled_from(SERVICES), st.booleans()),
    st.tuples(st.just("call"), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("serve"), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("cut"), st.integers(0, 2)),
    st.tuples(st.just("heal"), st.integers(0, 2)),
)


def run(ops: list[tuple], kiosks: int, skews: list[int], policy: QueuePolicy) -> list[Kiosk]:
    office = [Kiosk(f"k{i}", i, skews[i]) for i in range(kiosks)]
    up = set(range(kiosks))
    now = 1_000_000
    for o in ops:
        now += 1_000
        k = office[o[1] % kiosks]
        local = settle(k.log)
        if o[0] == "issue":
            n = next_number(k.log, o[2], DAY, k.slot, kiosks)
            k.append(now, "issue", f"{k.name}-{next_seq(k.log, k.name)}", day=DAY, service=o[2],
                     n=n, number=f"{o[2][0].upper()}{n:03d}", priority=o[3])  # fmt: skip
        elif o[0] == "call":
            order = local.call_order(DAY, QUEUES, policy)
            if order:
                k.append(now, "call", order[0].id, counter=o[2])
        elif o[0] == "serve":
            mine = [t for t in local.tickets.values() if t.state == "called" and t.counter == o[2]]
            if mine:
                k.append(now, "serve", mine[0].id, counter=o[2])
        elif o[0] == "cut":
            up.discard(o[1] % kiosks)
        else:
            up.add(o[1] % kiosks)
        joined = merge(*(office[i].log for i in up))  # the connected side shares everything
        for i in up:
            office[i].log = dict(joined)
    return office


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(op, max_size=120),
    kiosks=st.integers(1, 3),
    skews=st.lists(st.integers(-60_000, 60_000), min_size=3, max_size=3),
    mode=st.sampled_from(["strict", "interleave"]),
)
def test_random_splits_issue_no_number_twice_and_settle_alike(
    ops: list[tuple], kiosks: int, skews: list[int], mode: str
) -> None:
    policy = QueuePolicy(mode, 2)  # type: ignore[arg-type]
    office = run(ops, kiosks, skews, policy)
    logs = [k.log for k in office]
    whole = merge(*logs)
    issued = [(e.service, e.day, e.n) for e in whole.values() if e.kind == "issue"]
    assert len(issued) == len(set(issued)), "a number issued twice"
    # the merge is a union: any order, any grouping, any repetition gives one log
    for a, b in itertools.permutations(logs, 2):
        assert merge(a, b) == merge(b, a) and merge(a, a) == a
    assert merge(*reversed(logs), *logs) == whole
    settled = settle(whole)
    assert settle(merge(*reversed(logs))) == settled
    calls = Counter(
        e.ticket
        for e in whole.values()
        if e.kind == "call" and e not in {c.entry for c in settled.conflicts}
    )
    assert all(c == 1 for c in calls.values()), "a ticket called twice after settling"
    for c in settled.conflicts:
        if c.entry.kind == "call":  # the losing counter is told who had it
            assert c.winner is not None and c.winner.kind == "call"
            assert c.winner.order < c.entry.order
            assert c.state in ("called", "served", "skipped")
    if not any(o[0] == "cut" for o in ops):
        assert settled.conflicts == ()


@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(op, max_size=80),
    skews=st.lists(st.integers(-5_000, 5_000), min_size=3, max_size=3),
)
def test_after_the_rejoin_the_counters_call_by_issue_time(
    ops: list[tuple], skews: list[int]
) -> None:
    rejoined = [*ops, ("heal", 0), ("heal", 1), ("heal", 2)]
    office = run(rejoined, 3, skews, STRICT)  # run is deterministic: the same prefix below
    healed_at = max((e.at_ms for e in office[0].log.values()), default=0)
    rest = len(settle(office[0].log).waiting(DAY, QUEUES))
    office = run(rejoined + [("call", i, i % 3 + 1) for i in range(rest)], 3, skews, STRICT)
    whole = merge(*(k.log for k in office))
    assert all(k.log == whole for k in office)
    settled = settle(whole)
    assert settled.waiting(DAY, QUEUES) == [] and settled.conflicts == settle(merge(*(
        k.log for k in run(rejoined, 3, skews, STRICT)))).conflicts  # fmt: skip
    after = sorted(
        (t for t in settled.tickets.values() if t.called_ms > healed_at), key=lambda t: t.called_ms
    )
    prio = [t.issued_ms for t in after if t.priority]
    normal = [t.issued_ms for t in after if not t.priority]
    assert prio == sorted(prio) and normal == sorted(normal)
    assert all(t.priority for t in after[: len(prio)])  # strict: priority first


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(op, max_size=80), chunks=st.lists(st.integers(1, 8), min_size=1))
def test_settling_as_entries_come_is_settling_the_whole_log(
    ops: list[tuple], chunks: list[int]
) -> None:
    whole = merge(*(k.log for k in run(ops, 2, [0, 0, 0], STRICT)))
    arrival = sorted(
        whole.values(), key=lambda e: (e.kiosk != "k0", e.seq)
    )  # one side, then the other
    replay, i, known = Replay(), 0, {}
    while i < len(arrival):
        chunk = arrival[i : i + chunks[i % len(chunks)]]
        known.update((e.key, e) for e in chunk)
        if not replay.extend(chunk):  # as SharedQueue does: an early entry, replay it all
            replay = Replay()
            assert replay.extend(known.values())
        i += len(chunk)
    assert replay.settled() == settle(whole)


def test_number_after_refuses_a_bad_slot() -> None:
    assert [number_after(4, s, 3) for s in range(3)] == [7, 5, 6]
    with pytest.raises(ValueError, match="slot 3 is not one of"):
        number_after(0, 3, 3)
