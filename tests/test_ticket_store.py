"""kiosk.ticket_store: durable numbers, the queue's transitions, and kill -9 while issuing."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kiosk.numbering import QueuePolicy, Service, local_day
from kiosk.ticket_store import IssueRefused, TicketError, TicketStore

VN = ZoneInfo("Asia/Ho_Chi_Minh")
ROOT = Path(__file__).resolve().parent.parent
HO_TICH = Service(code="ho-tich", name_vi="Hộ tịch", name_en="Civil status", prefix="A")
DAT_DAI = Service(code="dat-dai", name_vi="Đất đai", name_en="Land", prefix="B", daily_limit=3)
STRICT = QueuePolicy("strict")


def at(day: int, hh: int, mm: int, ss: int = 0) -> int:
    """Epoch ms of a local time in November 2026 (the 23rd is a Monday)."""
    return int(datetime(2026, 11, day, hh, mm, ss, tzinfo=VN).timestamp() * 1000)


@pytest.fixture
def store(tmp_path: Path) -> TicketStore:
    return TicketStore(tmp_path / "tickets.db")


def test_numbers_are_sequential_per_service_per_day(store: TicketStore) -> None:
    a = [store.issue(HO_TICH, at(23, 9, 0) + i) for i in range(3)]
    b = store.issue(DAT_DAI, at(23, 9, 1))
    assert [t.number for t in a] == ["A001", "A002", "A003"]
    assert b.number == "B001"
    assert {t.state for t in a} == {"waiting"} and not a[0].printed
    assert a[0].day == date(2026, 11, 23)
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_numbers_restart_the_next_local_day(store: TicketStore) -> None:
    store.issue(HO_TICH, at(23, 16, 29, 59))
    store.issue(HO_TICH, at(23, 16, 29, 59))
    tuesday = store.issue(HO_TICH, at(24, 7, 0))
    assert tuesday.number == "A001" and tuesday.day == date(2026, 11, 24)
    assert [t.n for t in store.tickets(date(2026, 11, 23))] == [1, 2]


def test_refusals_issue_nothing(store: TicketStore) -> None:
    with pytest.raises(IssueRefused, match="Outside service hours") as closed:
        store.issue(HO_TICH, at(23, 12, 0))
    assert closed.value.refusal.reason == "closed"
    for _ in range(3):
        store.issue(DAT_DAI, at(23, 9, 0))
    with pytest.raises(IssueRefused) as limit:
        store.issue(DAT_DAI, at(23, 9, 5))
    assert limit.value.refusal.reason == "limit"
    assert len(store.tickets(date(2026, 11, 23))) == 3
    assert store.issue(DAT_DAI, at(24, 9, 0)).number == "B001"


def test_printing_and_reprints(store: TicketStore) -> None:
    a = store.issue(HO_TICH, at(23, 9, 0))
    b = store.issue(HO_TICH, at(23, 9, 1))
    assert [t.number for t in store.pending_prints()] == ["A001", "A002"]
    store.mark_printed(a.id)
    assert [t.id for t in store.pending_prints()] == [b.id]
    assert store.ticket(a.id).printed
    with pytest.raises(TicketError, match="no ticket"):
        store.mark_printed("nope")


def test_a_ticket_through_the_counter(store: TicketStore) -> None:
    t = store.issue(HO_TICH, at(23, 9, 0))
    called = store.call_next(2, ["ho-tich"], STRICT, at(23, 9, 5))
    assert called is not None and called.id == t.id
    assert (called.state, called.counter, called.called_ms) == ("called", 2, at(23, 9, 5))
    assert store.call_next(1, ["ho-tich"], STRICT, at(23, 9, 6)) is None
    assert store.recall(t.id).recalls == 1
    done = store.serve_done(t.id, at(23, 9, 9))
    assert done.state == "served"
    assert store.service_times("ho-tich", date(2026, 11, 23)) == [(at(23, 9, 9), 240.0)]
    assert store.rate(t.id, 5).rating == 5
    with pytest.raises(TicketError, match="already rated"):
        store.rate(t.id, 1)


def test_skip_recall_and_transfer(store: TicketStore) -> None:
    a = store.issue(HO_TICH, at(23, 9, 0))
    b = store.issue(HO_TICH, at(23, 9, 1))
    c = store.issue(DAT_DAI, at(23, 9, 2))
    store.call_next(1, ["ho-tich"], STRICT, at(23, 9, 3))
    assert store.skip(a.id).state == "skipped"
    back = store.recall(a.id)  # the no-show came back
    assert (back.state, back.counter) == ("called", 1)
    moved = store.transfer(a.id, "dat-dai")
    assert (moved.state, moved.queue, moved.number, moved.counter) == (
        "waiting",
        "dat-dai",
        "A001",
        None,
    )
    day = date(2026, 11, 23)
    assert [t.id for t in store.waiting("dat-dai", day)] == [a.id, c.id]  # its place by issuing
    assert [t.id for t in store.waiting("ho-tich", day)] == [b.id]
    nxt = store.call_next(3, ["dat-dai"], STRICT, at(23, 9, 4))
    assert nxt is not None and nxt.id == a.id


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (
            lambda s, t: s.rate(t, 4),
            "cannot rate ticket A001 (ho-tich, 2026-11-23): it is waiting, not served",
        ),
        (lambda s, t: s.serve_done(t, 0), "cannot finish ticket A001"),
        (lambda s, t: s.skip(t), "cannot skip"),
        (
            lambda s, t: s.recall(t),
            "cannot recall ticket A001 (ho-tich, 2026-11-23): it is waiting, not called or skipped",
        ),
        (lambda s, t: s.rate(t, 6), "1 (Rất không hài lòng) to 5"),
        (lambda s, t: s.transfer(t, "Đất đai"), "not a service code"),
        (lambda s, t: s.call_next(0, ["ho-tich"], STRICT, 0), "counter must be >= 1"),
        (lambda s, t: s.call_next(1, [], STRICT, 0), "at least one service"),
    ],
)
def test_impossible_transitions_are_refused(
    store: TicketStore, action: Callable[[TicketStore, str], object], error: str
) -> None:
    t = store.issue(HO_TICH, at(23, 9, 0))
    with pytest.raises(TicketError, match=re.escape(error)):
        action(store, t.id)
    assert store.ticket(t.id).state == "waiting"


def test_served_tickets_cannot_move_back(store: TicketStore) -> None:
    t = store.issue(HO_TICH, at(23, 9, 0))
    store.call_next(1, ["ho-tich"], STRICT, at(23, 9, 1))
    store.serve_done(t.id, at(23, 9, 2))
    for act in (store.skip, store.recall, lambda i: store.transfer(i, "dat-dai")):
        with pytest.raises(TicketError, match="it is served"):
            act(t.id)


def test_call_next_follows_the_policy_across_services(store: TicketStore) -> None:
    policy = QueuePolicy("interleave", every=2)
    when = at(23, 9, 0)
    n1 = store.issue(HO_TICH, when)
    p1 = store.issue(HO_TICH, when + 1, priority=True)
    n2 = store.issue(DAT_DAI, when + 2)
    n3 = store.issue(HO_TICH, when + 3)
    p2 = store.issue(DAT_DAI, when + 4, priority=True)
    called = []
    for i in range(6):
        t = store.call_next(1, ["ho-tich", "dat-dai"], policy, when + 1000 * (i + 1))
        if t is not None:
            called.append(t.id)
    assert called == [n1.id, n2.id, p1.id, n3.id, p2.id]
    # yesterday's leftovers are not called today
    store.issue(HO_TICH, when)
    assert store.call_next(1, ["ho-tich"], STRICT, at(24, 9, 0)) is None


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "tickets.db"
    first = TicketStore(path)
    first.issue(HO_TICH, at(23, 9, 0))
    first.close()
    assert TicketStore(path).issue(HO_TICH, at(23, 9, 1)).number == "A002"


def _logged(log: Path) -> int:
    try:
        return log.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_thousand_tickets_with_kill_9(tmp_path: Path) -> None:
    """The issue's acceptance test: SIGKILL at random moments while issuing."""
    db, log, target = tmp_path / "tickets.db", tmp_path / "issued.log", 1000
    now_ms = at(23, 9, 0)
    rng = random.Random(4)
    kills = 0
    started = time.monotonic()
    argv = [sys.executable, "-m", "tests.drivers.issue_tickets", str(db), str(log)]
    while True:
        proc = subprocess.Popen([*argv, str(now_ms), str(target)], cwd=ROOT, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # the interpreter's start is not what we test
        # kill once a random number more tickets are out, whatever the machine's speed: the
        # kill lands while the driver is issuing, never after it is done
        goal = _logged(log) + rng.randint(1, 120)
        while proc.poll() is None and _logged(log) < goal:
            time.sleep(0.001)
        if proc.poll() is not None:
            assert proc.returncode == 0
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        kills += 1
        assert time.monotonic() - started < 120, "no progress"
    assert kills >= 3, "the driver was hardly ever killed while issuing"

    tickets = TicketStore(db).tickets(local_day(now_ms), "ho-tich")
    ns = [t.n for t in tickets]
    assert len(ns) >= target
    assert len(set(ns)) == len(ns), "a number was issued twice"
    assert sorted(ns) == list(range(1, len(ns) + 1)), "a number was skipped"
    assert [t.number for t in tickets] == [f"A{n:04d}" for n in sorted(ns)]
    lines = log.read_bytes().split(b"\n")
    logged = [x.decode() for x in lines[:-1]]  # a kill mid-write can leave a partial last line
    assert len(set(logged)) == len(logged)
    assert set(logged) <= {t.number for t in tickets}, "a printed number is not in the store"
    check = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0]
    assert check == "ok"
