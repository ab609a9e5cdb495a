"""The citizen's ticket page on the controller (controller/queue/ticket_status.py and
controller/web/routes/ticket_status.py): the day's ``ticket.*`` events replayed into the
ticket's state, its people ahead and wait by the kiosk's rule, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.db.fleet_tables import EventRecord
from controller.queue.ticket_status import ViewLimit, replay, status_of
from protocol.events import (
    CounterState,
    TicketCalled,
    TicketIssued,
    TicketServed,
    TicketSkipped,
    TicketTransferred,
)
from tests.booking_helpers import MONDAY_9_S, booking_app

T0 = int(MONDAY_9_S * 1000)
MIN = 60_000
DAY = "2026-11-23"


def fields(n: int, queue: str = "ho-tich", priority: bool = False) -> dict[str, Any]:
    return {
        "ticket_id": f"t{n}",
        "number": f"A{n:03d}",
        "service": "ho-tich",
        "queue": queue,
        "day": DAY,
        "priority": priority,
    }


def issued(n: int, at: int, priority: bool = False) -> TicketIssued:
    return TicketIssued(**fields(n, priority=priority), issued_ms=at, people_ahead=0, wait_s=None)


def called(n: int, counter: int = 1, queue: str = "ho-tich") -> TicketCalled:
    return TicketCalled(**fields(n, queue), counter=counter, recall=0, waited_ms=MIN)


def served(n: int, service_ms: int, counter: int = 1) -> TicketServed:
    return TicketServed(**fields(n), counter=counter, service_ms=service_ms)


def moved(n: int, to: str) -> TicketTransferred:
    return TicketTransferred(**fields(n), counter=2, from_queue="ho-tich", to_queue=to)


def test_replay_follows_calls_skips_transfers_and_a_no_show_brought_back() -> None:
    events = [
        ("kiosk-1", T0, issued(1, T0)),
        ("kiosk-1", T0 + 1, issued(2, T0 + 1)),
        ("kiosk-1", T0 + 2, issued(3, T0 + 2)),
        ("kiosk-1", T0 + 3, called(1)),
        ("kiosk-1", T0 + 4, TicketSkipped(**fields(1), counter=1, reason="no_show")),
        ("kiosk-2", T0 + 5, called(2, counter=2)),  # the office's other kiosk's counter
        ("kiosk-2", T0 + 6, moved(2, "dat-dai")),
        ("kiosk-1", T0 + 7, called(1)),  # brought back
        ("kiosk-1", T0 + 8, called(99)),  # no issue known: left out, nothing breaks
    ]
    day = replay(events)
    assert day.tickets["t1"].state == "called" and day.tickets["t1"].counter == 1
    assert day.tickets["t2"].state == "waiting" and day.tickets["t2"].queue == "dat-dai"
    assert "t99" not in day.tickets
    s = status_of(day, "t3", T0 + 9)
    assert s is not None and s.wait is not None
    assert s.wait.people_ahead == 0 and s.wait.near  # t2 waits in another queue now
    assert status_of(day, "t1", T0 + 9).wait is None  # type: ignore[union-attr]
    assert status_of(day, "nope", T0) is None


def test_priority_goes_ahead_and_paused_counters_do_not_count() -> None:
    events = [("kiosk-1", T0 + n, issued(n, T0 + n)) for n in range(1, 6)]
    events.append(("kiosk-1", T0 + 6, issued(6, T0 + 6, priority=True)))
    events += [("kiosk-1", T0 + 10, called(1, 1))]
    events += [("kiosk-1", T0 + 11 + 4 * MIN, served(1, 4 * MIN))]
    events += [("kiosk-1", T0 + 20, called(2, 2))]
    day = replay(events)
    now = T0 + 5 * MIN
    last = status_of(day, "t5", now)
    assert last is not None and last.wait is not None
    # t3, t4 and the priority t6 are ahead; two counters served today; 4 minutes each
    assert last.wait.people_ahead == 3 and last.wait.wait_s == pytest.approx(4 * 60 * 3 / 2)
    assert last.wait.from_history and not last.wait.near
    prio = status_of(day, "t6", now)
    assert prio is not None and prio.wait is not None and prio.wait.people_ahead == 0
    paused = replay([*events, ("kiosk-1", T0 + 30, CounterState(counter=2, paused=True))])
    one = status_of(paused, "t5", now)
    assert one is not None and one.wait is not None
    assert one.wait.wait_s == pytest.approx(4 * 60 * 3)
    both = replay([*events, ("kiosk-1", 31, CounterState(counter=1, paused=True)),
                   ("kiosk-1", 32, CounterState(counter=2, paused=True))])  # fmt: skip
    none_open = status_of(both, "t5", now)
    assert none_open is not None and none_open.wait is not None
    assert none_open.wait.wait_s is None


def test_the_view_limit_counts_a_sliding_minute_per_address() -> None:
    limit = ViewLimit(3)
    assert all(limit.allow("1.2.3.4", T0 + i) for i in range(3))
    assert not limit.allow("1.2.3.4", T0 + 10)
    assert limit.allow("5.6.7.8", T0 + 10)
    assert limit.allow("1.2.3.4", T0 + MIN + 1)


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Any:
    app = booking_app(tmp_path, database_url, views=40)
    yield app
    app.state.xaso.engine.dispose()


def store(app: Any, *events: tuple[str, int, Any]) -> None:
    with app.state.xaso.sessions.begin() as db:
        for i, (device, ts, body) in enumerate(events):
            db.add(EventRecord(device_id=device, event_id=f"e{ts}-{i}", type=body.TYPE, ts_ms=ts,
                               received_ms=ts, body=body.wire()))  # fmt: skip


def test_the_page_tells_the_state_the_people_ahead_and_the_wait(app: Any) -> None:
    start = T0 - 30 * MIN
    store(app, *[("kiosk-1", start + n, issued(n, start + n)) for n in range(1, 6)])
    store(app, ("kiosk-1", T0 - 20 * MIN, called(1)))
    store(app, ("kiosk-1", T0 - 17 * MIN, served(1, 3 * MIN)))
    store(app, ("loa-1", T0, issued(7, T0)))  # another device's ticket is not this kiosk's
    with TestClient(app) as client:
        r = client.get("/ve/kiosk-1/t5")
        assert r.status_code == 200
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "script" not in r.headers["content-security-policy"] and "<script" not in r.text
        page = r.text
        assert "A005" in page and "Hộ tịch" in page and "Lấy số lúc 08:30 ngày 23/11/2026" in page
        assert 'id="ahead">3<' in page and "khoảng 9 phút" in page and "Sắp đến lượt" not in page
        assert "sơ bộ" not in page  # one service today: the estimate comes from it
        english = client.get("/ve/kiosk-1/t5?lang=en").text
        assert "People ahead" in english and "about 9 min" in english and "Civil status" in english
        near = client.get("/ve/kiosk-1/t4?lang=vi").text
        assert "Sắp đến lượt" in near and 'id="ahead">2<' in near
        assert "Xin mời đến quầy số 1" not in client.get("/ve/kiosk-1/t1").text
        assert "Đã phục vụ xong" in client.get("/ve/kiosk-1/t1").text
        unknown = ("/ve/kiosk-1/khong-co", "/ve/loa-2/t5", "/ve/kiosk-1/t7", "/ve/x/" + "a" * 500)
        for path in unknown:
            missing = client.get(path)
            assert missing.status_code == 404, path
            assert "Không tìm thấy vé này" in missing.text and "Traceback" not in missing.text
            assert "default-src 'none'" in missing.headers["content-security-policy"]
        assert "This ticket was not found" in client.get("/ve/kiosk-1/nope?lang=en").text


def test_the_page_follows_new_events_and_a_call(app: Any) -> None:
    store(app, ("kiosk-1", T0, issued(1, T0)), ("kiosk-1", T0 + 1, issued(2, T0 + 1)))
    with TestClient(app) as client:
        page = client.get("/ve/kiosk-1/t2").text
        assert 'id="ahead">1<' in page and "ước tính sơ bộ" in page  # no service yet today
        store(app, ("kiosk-1", T0 + 2, called(2, counter=3)))
        app.state.xaso.tickets.monotonic = lambda: 1e12  # the shared replay is due again
        assert "Xin mời đến quầy số 3" in client.get("/ve/kiosk-1/t2").text


def test_too_many_views_from_one_address_are_told_to_wait(app: Any) -> None:
    store(app, ("kiosk-1", T0, issued(1, T0)))
    with TestClient(app) as client:
        codes = [client.get("/ve/kiosk-1/t1").status_code for _ in range(41)]
        assert codes[:40] == [200] * 40
        r = client.get("/ve/kiosk-1/t1")
        assert r.status_code == 429 and "thử lại sau 1 phút" in r.text
