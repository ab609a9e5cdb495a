"""kiosk.office: the counters' operations on a real ticket file, with the clock passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from kiosk.numbering import QueuePolicy, Service
from kiosk.office import KioskError, Office, OfficeSettings
from kiosk.ticket_store import TicketStore
from plumbing.validation import convert

T0 = 1_795_399_200_000  # Monday 23 November 2026, 09:00 in Hà Nội
MIN = 60_000
HO_TICH = Service(code="ho-tich", name_vi="Hộ tịch", name_en="Civil status", prefix="A")
DAT_DAI = Service(code="dat-dai", name_vi="Đất đai", name_en="Land", prefix="B")


@pytest.fixture
def events() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def office(tmp_path: Path, events: list[tuple[str, dict[str, Any]]]) -> Office:
    settings = OfficeSettings(
        services=(HO_TICH, DAT_DAI),
        counters=3,
        counter_services={3: ("dat-dai",)},
        policy=QueuePolicy("interleave", 2),
    )
    return Office(
        TicketStore(tmp_path / "t.db"),
        settings,
        lambda body: events.append((body.TYPE, body.wire())),
    )


def types(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [t for t, _ in events]


def test_a_citizen_from_kiosk_to_rating(office: Office, events: list[Any]) -> None:
    first = office.issue("ho-tich", T0)
    second = office.issue("ho-tich", T0 + 1000)
    assert (first.ticket.number, first.people_ahead) == ("A001", 0)
    assert (second.ticket.number, second.people_ahead) == ("A002", 1)
    assert second.wait_s is None  # no service finished yet: no honest estimate

    called = office.call_next(2, T0 + MIN)
    assert called is not None and called.number == "A001" and called.counter == 2
    assert office.current(2, T0 + MIN) == called
    assert office.people_ahead(office.store.ticket(second.ticket.id)) == 0
    office.recall(2, T0 + 2 * MIN)
    served = office.served(2, T0 + 5 * MIN)
    assert served.state == "served"
    rated = office.rate(2, 5, T0 + 6 * MIN)
    assert rated.id == first.ticket.id and rated.rating == 5

    assert types(events) == [
        "ticket.issued",
        "ticket.issued",
        "ticket.called",
        "ticket.called",
        "ticket.served",
        "ticket.rated",
    ]
    recall = events[3][1]
    assert recall["recall"] == 1 and recall["counter"] == 2 and recall["number"] == "A001"
    assert events[4][1]["service_ms"] == 4 * MIN
    assert events[5][1] | {"level": 5, "label_vi": "Rất hài lòng", "counter": 2} == events[5][1]
    # the estimate now uses the finished service: 4 minutes, one ahead, three counters open
    third = office.issue("ho-tich", T0 + 7 * MIN)
    assert third.people_ahead == 1 and third.wait_s == pytest.approx(240 / 2)


def test_call_next_finishes_the_previous_and_follows_the_policy(office: Office) -> None:
    a1 = office.issue("ho-tich", T0).ticket
    a2 = office.issue("ho-tich", T0 + 1).ticket
    a3 = office.issue("ho-tich", T0 + 2).ticket
    p = office.issue("ho-tich", T0 + 3, priority=True).ticket
    order = [office.call_next(1, T0 + MIN * (i + 1)) for i in range(4)]
    # interleave, one priority after every two normal tickets
    assert [t.number if t else None for t in order] == [a1.number, a2.number, p.number, a3.number]
    assert office.store.ticket(a1.id).state == "served"  # "next" means the last one is done
    assert office.call_next(1, T0 + 10 * MIN) is None  # nobody waits
    assert office.current(1, T0 + 10 * MIN) is None


def test_counters_call_only_their_services(office: Office) -> None:
    office.issue("ho-tich", T0)
    assert office.call_next(3, T0 + MIN) is None  # counter 3 serves land only
    b = office.issue("dat-dai", T0 + 2)
    called = office.call_next(3, T0 + MIN)
    assert called is not None and called.id == b.ticket.id


def test_skip_transfer_and_pause(office: Office, events: list[Any]) -> None:
    a1 = office.issue("ho-tich", T0).ticket
    office.call_next(1, T0 + MIN)
    skipped = office.skip(1, T0 + 2 * MIN)
    assert skipped.state == "skipped" and events[-1][1]["reason"] == "no_show"
    a2 = office.issue("ho-tich", T0 + 3).ticket
    office.call_next(1, T0 + 3 * MIN)
    moved = office.transfer(1, "dat-dai", T0 + 4 * MIN)
    assert (moved.id, moved.queue, moved.state) == (a2.id, "dat-dai", "waiting")
    assert events[-1] == (
        "ticket.transferred",
        events[-1][1] | {"from_queue": "ho-tich", "to_queue": "dat-dai", "counter": 1},
    )
    again = office.call_next(3, T0 + 5 * MIN)  # the land counter gets it, same number
    assert again is not None and again.number == a2.number and a1.number == "A001"

    office.set_paused(2, True)
    assert events[-1] == ("counter.state", {"counter": 2, "paused": True})
    with pytest.raises(KioskError) as exc:
        office.call_next(2, T0 + 6 * MIN)
    assert exc.value.code == "paused" and "tạm dừng" in exc.value.vi and "paused" in exc.value.en
    assert office.board(T0)["counters"][1]["paused"] is True
    office.set_paused(2, False)
    office.call_next(2, T0 + 6 * MIN)


@pytest.mark.parametrize("counter", [0, 4, -1, 100, True, "1", 1.5, None])
def test_counters_out_of_range_are_refused_in_both_languages(office: Office, counter: Any) -> None:
    for action in (
        lambda: office.call_next(counter, T0),
        lambda: office.recall(counter, T0),
        lambda: office.skip(counter, T0),
        lambda: office.served(counter, T0),
        lambda: office.transfer(counter, "dat-dai", T0),
        lambda: office.set_paused(counter, True),
        lambda: office.rate(counter, 5, T0),
    ):
        with pytest.raises(KioskError) as exc:
            action()
        err = exc.value
        assert err.code == "unknown_counter" and err.status == 422
        assert "từ 1 đến 3" in err.vi and "1 to 3" in err.en


def test_refusals_are_clear(office: Office) -> None:
    cases = [
        (lambda: office.issue("khong-co", T0), "unknown_service", 422),
        (lambda: office.issue("ho-tich", T0 - 3 * 3600_000), "closed", 409),  # 06:00
        (lambda: office.recall(1, T0), "no_ticket", 409),
        (lambda: office.served(1, T0), "no_ticket", 409),
        (lambda: office.rate(1, 5, T0), "nothing_to_rate", 409),
        (lambda: office.rate(1, 6, T0), "bad_rating", 422),
        (lambda: office.ticket("nope"), "unknown_ticket", 404),
    ]
    for action, code, status in cases:
        with pytest.raises(KioskError) as exc:
            action()
        assert (exc.value.code, exc.value.status) == (code, status)
        assert exc.value.vi and exc.value.en and exc.value.vi != exc.value.en
    office.issue("ho-tich", T0)
    office.call_next(1, T0)
    with pytest.raises(KioskError) as exc:
        office.transfer(1, "ho-tich", T0)
    assert exc.value.code == "same_service"
    office.served(1, T0 + MIN)
    office.rate(1, 3, T0 + MIN)
    with pytest.raises(KioskError) as exc:
        office.rate(1, 4, T0 + MIN)  # rated once
    assert exc.value.code == "nothing_to_rate"


def test_the_board_shows_counters_and_last_calls(office: Office) -> None:
    for i in range(3):
        office.issue("ho-tich", T0 + i)
    office.call_next(1, T0 + MIN)
    office.call_next(2, T0 + 2 * MIN)
    board = office.board(T0 + 3 * MIN)
    assert [c["number"] for c in board["counters"]] == ["A001", "A002", None]
    assert [(c["number"], c["counter"]) for c in board["last_calls"]] == [("A002", 2), ("A001", 1)]
    assert board["waiting"] == {"ho-tich": 1, "dat-dai": 0}


def test_a_window_to_24_00_issues_in_the_last_minute_of_the_day(tmp_path: Path) -> None:
    all_day = convert(
        msgspec.to_builtins(HO_TICH) | {"hours": [("00:00", "24:00")]}, Service, strict=False
    )
    office = Office(
        TicketStore(tmp_path / "t.db"),
        OfficeSettings(services=(all_day,), counters=1),
        lambda body: None,
    )
    last_minute = T0 + 15 * 60 * MIN - 1000  # 23:59:59 in Hà Nội
    assert office.issue("ho-tich", last_minute).ticket.number == "A001"
    assert office.issue("ho-tich", last_minute + 1000).ticket.number == "A001"  # a new day
    for bad in (("24:00", "24:00"), ("07:00", "24:01")):
        with pytest.raises(ValueError):
            convert(msgspec.to_builtins(HO_TICH) | {"hours": [bad]}, Service, strict=False)


def test_a_rating_is_for_the_service_just_finished_and_only_once(
    office: Office, events: list[Any]
) -> None:
    a1, a2 = office.issue("ho-tich", T0).ticket, office.issue("ho-tich", T0 + 1).ticket
    office.call_next(1, T0 + MIN, "can-bo-an")
    office.call_next(1, T0 + 2 * MIN, "can-bo-an")  # A001 served unrated, A002 called
    office.served(1, T0 + 3 * MIN, "can-bo-an")
    assert office.to_rate(1, T0 + 3 * MIN) == office.store.ticket(a2.id)
    with pytest.raises(KioskError) as exc:
        office.rate(1, 5, T0 + 4 * MIN, a1.id)  # the citizen before: not theirs to rate now
    assert exc.value.code == "not_to_rate" and "Đã xong" in exc.value.vi
    assert office.rate(1, 4, T0 + 4 * MIN, a2.id).rating == 4
    with pytest.raises(KioskError) as exc:
        office.rate(1, 5, T0 + 4 * MIN, a2.id)  # the second tap
    assert exc.value.code == "already_rated" and "A002 đã được đánh giá rồi" in exc.value.vi
    with pytest.raises(KioskError) as exc:
        office.rate(1, 5, T0 + 4 * MIN)  # never falls back to A001's unrated service
    assert exc.value.code == "nothing_to_rate"
    assert office.store.ticket(a1.id).rating is None
    assert office.to_rate(1, T0 + 4 * MIN) is None
    rated = [body for kind, body in events if kind == "ticket.rated"]
    assert [(r["number"], r["level"], r["officer"]) for r in rated] == [("A002", 4, "can-bo-an")]


def test_call_a_number_bring_back_a_no_show_and_transfer_with_a_note(
    office: Office, events: list[Any]
) -> None:
    for i in range(3):
        office.issue("ho-tich", T0 + i)
    a3 = office.call_number(2, "a003", T0 + MIN, "can-bo-an")  # out of turn, any case
    assert (a3.number, a3.state, a3.counter) == ("A003", "called", 2)
    office.skip(2, T0 + 2 * MIN, "can-bo-an")
    assert office.board(T0 + 2 * MIN)["no_shows"] == [{"number": "A003", "counter": 2}]
    office.call_next(1, T0 + 3 * MIN, "can-bo-binh")  # A001 at counter 1
    back = office.call_number(2, "A003", T0 + 4 * MIN, "can-bo-an")  # the no-show came back
    assert (back.state, back.counter, back.recalls) == ("called", 2, 1)
    assert office.board(T0 + 4 * MIN)["no_shows"] == []
    for number, code, status in (
        ("A001", "cannot_call", 409),  # called at counter 1
        ("A099", "unknown_number", 404),
        ("", "unknown_number", 404),
    ):
        with pytest.raises(KioskError) as exc:
            office.call_number(2, number, T0 + 5 * MIN, "can-bo-an")
        assert (exc.value.code, exc.value.status) == (code, status)
        assert exc.value.vi and exc.value.en
        if code == "cannot_call":
            assert "đang được gọi ở quầy 1" in exc.value.vi
    with pytest.raises(KioskError) as exc:
        office.transfer(2, "dat-dai", T0 + 5 * MIN, "can-bo-an", "x" * 201)
    assert exc.value.code == "note_too_long" and office.current(2, T0 + 5 * MIN) == back
    moved = office.transfer(2, "dat-dai", T0 + 5 * MIN, "can-bo-an", "  Thiếu bản sao sổ đỏ ")
    assert (moved.queue, moved.state) == ("dat-dai", "waiting")
    office.call_next(3, T0 + 6 * MIN, "can-bo-chi")
    office.call_number(3, "A002", T0 + 7 * MIN, "can-bo-chi")  # A003 (now Đất đai) served first

    actions = [(a.action, a.counter, a.officer, a.note) for a in office.store.actions(a3.id)]
    assert actions == [
        ("called", 2, "can-bo-an", None),
        ("skipped", 2, "can-bo-an", None),
        ("brought_back", 2, "can-bo-an", None),
        ("called", 2, "can-bo-an", None),
        ("transferred", 2, "can-bo-an", "Thiếu bản sao sổ đỏ"),
        ("called", 3, "can-bo-chi", None),
        ("served", 3, "can-bo-chi", None),
    ]
    transferred = next(body for kind, body in events if kind == "ticket.transferred")
    assert transferred["note"] == "Thiếu bản sao sổ đỏ" and transferred["officer"] == "can-bo-an"
    called = [body for kind, body in events if kind == "ticket.called"]
    assert [(c["number"], c["counter"], c["recall"], c["officer"]) for c in called] == [
        ("A003", 2, 0, "can-bo-an"),
        ("A001", 1, 0, "can-bo-binh"),
        ("A003", 2, 1, "can-bo-an"),
        ("A003", 3, 0, "can-bo-chi"),
        ("A002", 3, 0, "can-bo-chi"),
    ]


def test_without_an_officer_the_records_are_as_before(office: Office, events: list[Any]) -> None:
    office.issue("ho-tich", T0)
    office.call_next(1, T0 + MIN)
    office.set_paused(2, True)
    assert all("officer" not in body for _kind, body in events)
