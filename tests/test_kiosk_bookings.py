"""Booked citizens at the kiosk: the call rule (kiosk/booked.py), redeeming a code
(kiosk/bookings.py) and "next" at a counter with walk-ins, on a clock moved by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from kiosk.booked import standing, with_bookings
from kiosk.numbering import QueuePolicy, call_order, local_day
from kiosk.service import Kiosk
from kiosk.web import create_app
from protocol.commands import BookingsSet
from tests.conftest import KioskClock
from tests.kiosk_helpers import OFFICERS
from tests.test_kiosk_web import refused, sign_in

MIN = 60_000
NINE = KioskClock().ms  # Monday 23/11/2026 09:00 in Hà Nội
GRACE = 15 * MIN


@dataclass(frozen=True)
class W:
    number: str
    priority: bool
    issued_ms: int


def test_a_booking_is_early_then_due_for_its_grace_then_late():
    assert standing(NINE, NINE - 1) == "early"
    assert standing(NINE, NINE) == "due"
    assert standing(NINE, NINE + GRACE - 1) == "due"
    assert standing(NINE, NINE + GRACE) == "late"
    with pytest.raises(ValueError):
        with_bookings([], {}, NINE, grace_ms=-1)


def test_due_bookings_go_first_among_normal_tickets_and_priority_keeps_its_place():
    tickets = [W("A001", False, 1), W("A002", False, 2), W("A003", True, 3), W("A004", False, 4)]
    order = call_order(tickets, QueuePolicy("strict"))
    assert [t.number for t in order] == ["A003", "A001", "A002", "A004"]
    slots = {"A004": NINE}
    moved = [t.number for t in with_bookings(order, slots, NINE + MIN)]
    assert moved == ["A003", "A004", "A001", "A002"]
    early = [t.number for t in with_bookings(order, slots, NINE - MIN)]
    assert early == ["A003", "A001", "A002"]  # waits for its slot
    late = [t.number for t in with_bookings(order, slots, NINE + GRACE)]
    assert late == ["A003", "A001", "A002", "A004"]  # a walk-in now, by its issuing time


tickets_st = st.lists(
    st.tuples(st.booleans(), st.integers(0, 3 * 3600_000), st.none() | st.integers(-60, 120)),
    max_size=30,
)


@given(
    raw=tickets_st,
    mode=st.sampled_from(["strict", "interleave"]),
    since=st.integers(0, 5),
    now_min=st.integers(0, 180),
)
def test_the_booked_order_is_the_policys_with_only_booked_tickets_moved(raw, mode, since, now_min):
    tickets = [W(f"A{i + 1:03d}", p, ms) for i, (p, ms, _) in enumerate(raw)]
    slots = {
        t.number: NINE + s * MIN for t, (_, _, s) in zip(tickets, raw, strict=True) if s is not None
    }
    now = NINE + now_min * MIN
    order = call_order(tickets, QueuePolicy(mode, 3), since)
    moved = with_bookings(order, slots, now, GRACE)
    kind = {n: standing(s, now, GRACE) for n, s in slots.items()}
    # nothing lost but the early ones, nothing added, nobody twice
    assert sorted(t.number for t in moved) == sorted(
        t.number for t in order if kind.get(t.number) != "early"
    )
    # the tickets not moved keep the policy's order among themselves
    still = [
        t
        for t in order
        if kind.get(t.number) != "early" and (kind.get(t.number) != "due" or t.priority)
    ]
    assert [t for t in moved if t in still] == still
    # a due normal booking is called before every normal ticket that is not a due booking
    normal = [t for t in moved if not t.priority]
    due = [i for i, t in enumerate(normal) if kind.get(t.number) == "due"]
    others = [i for i, t in enumerate(normal) if kind.get(t.number) != "due"]
    assert not due or not others or max(due) < min(others)
    assert [slots[normal[i].number] for i in due] == sorted(slots[normal[i].number] for i in due)


# the kiosk


def bookings(*items: tuple[str, str, int]) -> BookingsSet:
    return msgspec.convert(
        {
            "version": 1,
            "bookings": [
                {"code": c, "service": s, "slot_ms": at, "slot_min": 15} for c, s, at in items
            ],
        },
        BookingsSet,
    )


@pytest.fixture
def clock() -> KioskClock:
    c = KioskClock()
    c.ms = NINE - 30 * MIN  # 08:30
    return c


@pytest.fixture
def kiosk(make_kiosk: Callable[..., Kiosk], clock: KioskClock) -> Kiosk:
    k = make_kiosk(officers=OFFICERS, clock=clock)
    k.bookings.apply(
        "xaso/dev/kiosk-1/bookings",
        bookings(("K7M2QX", "ho-tich", NINE), ("TMRW22", "ho-tich", NINE + 86_400_000)),
    )
    return k


def walk_in(kiosk: Kiosk) -> str:
    number: str = kiosk.issue("ho-tich")["number"]
    return number


def next_at(kiosk: Kiosk, counter: int = 1) -> str | None:
    ticket = kiosk.counter(counter, "next", officer="chi-lan")["ticket"]
    return None if ticket is None else str(ticket["number"])


def test_an_early_citizen_waits_for_the_slot_then_goes_first_among_walk_ins(
    kiosk: Kiosk, clock: KioskClock
):
    first = walk_in(kiosk)  # A001 at 08:30
    booked = kiosk.redeem_booking(" k7m2qx ")  # typed in lower case, with spaces
    assert booked["booked"] and booked["slot_local"] == "23/11/2026 09:00"
    later = [walk_in(kiosk), walk_in(kiosk)]
    assert next_at(kiosk) == first
    assert next_at(kiosk) == later[0]  # 08:30: the booked one waits for 09:00
    clock.ms = NINE + 2 * MIN
    assert next_at(kiosk) == booked["number"]  # its slot has come: before A004
    assert next_at(kiosk) == later[1]
    assert next_at(kiosk) is None


def test_a_citizen_later_than_the_grace_waits_as_a_walk_in(kiosk: Kiosk, clock: KioskClock):
    clock.ms = NINE + GRACE + MIN
    ahead = walk_in(kiosk)
    booked = kiosk.redeem_booking("K7M2QX")["number"]
    assert next_at(kiosk) == ahead and next_at(kiosk) == booked


def test_with_only_early_bookings_waiting_next_serves_the_current_and_calls_nobody(
    kiosk: Kiosk, clock: KioskClock
):
    walk_in(kiosk)
    kiosk.redeem_booking("K7M2QX")
    assert next_at(kiosk) is not None
    assert next_at(kiosk) is None  # the booked one is early: the counter waits
    clock.ms = NINE
    assert next_at(kiosk) is not None


@pytest.mark.parametrize(
    ("code", "status", "error", "vi"),
    [
        ("", 422, "bad_code", "6 chữ và số"),
        ("K7M2Q", 422, "bad_code", "6 chữ và số"),
        ("K7M2Q0", 422, "bad_code", "6 chữ và số"),
        ("ZZZZZZ", 404, "unknown_booking", "Không tìm thấy lịch hẹn"),
        ("TMRW22", 409, "other_day", "09:00 ngày 24/11/2026"),
    ],
)
def test_bad_codes_are_refused_clearly_and_issue_nothing(kiosk: Kiosk, code, status, error, vi):
    with TestClient(create_app(kiosk), raise_server_exceptions=False) as client:
        body = refused(client.post("/api/bookings/redeem", json={"code": code}), status, error)
        assert vi in body["vi"]
    assert kiosk.store.tickets(local_day(kiosk.now_ms())) == []  # nothing issued


def test_a_code_is_used_once_even_after_a_restart(
    make_kiosk: Callable[..., Kiosk], kiosk: Kiosk, clock: KioskClock
):
    with TestClient(create_app(kiosk), raise_server_exceptions=False) as client:
        ok = client.post("/api/bookings/redeem", json={"code": "K7M2QX"})
        assert ok.status_code == 201 and ok.json()["booked"] is True
        again = refused(client.post("/api/bookings/redeem", json={"code": "K7M2QX"}), 409)
        assert ok.json()["number"] in again["vi"]
        for bad in ({}, {"code": 7}, {"code": "K7M2QX", "x": 1}, {"code": "A" * 33}):
            refused(client.post("/api/bookings/redeem", json=bad), 422)
    number = ok.json()["number"]
    kiosk.close()
    reborn = make_kiosk(officers=OFFICERS, clock=clock)
    reborn.bookings.apply("t", bookings(("K7M2QX", "ho-tich", NINE)))  # as the agent restores
    with pytest.raises(Exception, match=number):
        reborn.redeem_booking("K7M2QX")
    clock.ms = NINE
    with TestClient(create_app(reborn), raise_server_exceptions=False) as client:
        headers = sign_in(client, 1)
        called = client.post("/api/counters/1/next", headers=headers)
        assert called.status_code == 200 and called.json()["ticket"]["number"] == number


def test_a_new_list_replaces_the_last_one(kiosk: Kiosk):
    kiosk.bookings.apply("t", bookings(("ABCDEF", "ho-tich", NINE)))
    with pytest.raises(Exception, match="Không tìm thấy"):
        kiosk.redeem_booking("K7M2QX")
    assert kiosk.redeem_booking("ABCDEF")["booked"]
