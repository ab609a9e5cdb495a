"""Proof of play and queue statistics from stored events, both databases.

Covers controller/fleet/reports.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.db.engine import make_engine, session_factory, upgrade
from controller.fleet.ingest_writes import Item, sync_devices_from_site, write_batch
from controller.fleet.reports import proof_of_play, queue_stats
from controller.web.report_sheets import plays_sheet, queue_sheet
from controller.web.spreadsheets import to_csv
from protocol.uplink import Event

DAY = 86_400_000
T0 = 1_763_800_000_000


@pytest.fixture
def sessions(database_url: str, site, broker) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with factory.begin() as s:
        sync_devices_from_site(site, s, 1)  # loa-1, loa-3 in thon-1; loa-2 in thon-2
    yield factory
    engine.dispose()


def store(sessions: sessionmaker[Session], events: list[tuple[str, str, int, dict[str, Any]]]):
    items = [
        Item(dev, "event", Event(id=f"e{n}", type=t, ts=ts, body=body), ts)
        for n, (dev, t, ts, body) in enumerate(events)
    ]
    with sessions.begin() as s:
        write_batch(s, items, T0)


def test_proof_of_play_per_device_and_group(sessions):
    play = {"key": "k", "origin": "schedule", "priority": 2, "planned_ms": T0}
    done = {**play, "actual_ms": T0, "outcome": "completed", "played_ms": 60_000}
    store(
        sessions,
        [
            ("loa-1", "play.started", T0, {**play, "actual_ms": T0}),
            ("loa-1", "play.finished", T0 + 1, done),
            (
                "loa-1",
                "play.finished",
                T0 + 2,
                {**done, "outcome": "preempted", "played_ms": 5_000},
            ),
            ("loa-1", "play.missed", T0 + 3, {**play, "reason": "quiet_hours"}),
            ("loa-2", "play.finished", T0 + 4, {**done, "played_ms": 30_000}),
            ("loa-2", "play.finished", T0 + 5, {**done, "outcome": "failed", "played_ms": 0}),
            ("loa-3", "play.missed", T0 + 6, {"key": "k", "reason": "device_down"}),
            ("loa-3", "play.finished", T0 + DAY, done),  # outside the period
        ],
    )
    with sessions() as s:
        by_device = {r.key: r for r in proof_of_play(s, T0, T0 + DAY, by="device")}
        by_group = {r.key: r for r in proof_of_play(s, T0, T0 + DAY, by="group")}
    loa1 = by_device["loa-1"]
    assert (loa1.plays, loa1.completed, loa1.total_played_ms) == (2, 1, 65_000)
    assert (loa1.missed, loa1.failed, loa1.missed_by_reason) == (1, 0, {"quiet_hours": 1})
    assert (by_device["loa-2"].plays, by_device["loa-2"].failed) == (1, 1)
    assert (by_device["loa-3"].plays, by_device["loa-3"].missed) == (0, 1)
    thon1 = by_group["thon-1"]  # loa-1 and loa-3
    assert (thon1.plays, thon1.total_played_ms, thon1.missed) == (2, 65_000, 2)
    assert by_group["all"].total_played_ms == 95_000 and by_group["all"].failed == 1
    assert set(by_group) == {"thon-1", "thon-2", "all"}


def test_interrupted_plays_are_counted_with_what_aired_and_a_resumed_rest_is_no_new_play(
    sessions,
):
    play = {"origin": "schedule", "priority": 2, "planned_ms": T0, "actual_ms": T0}
    cut = {"checkpoint_ms": T0 + 3_000}
    store(
        sessions,
        [
            # cut by an emergency, resumed, then completed: one play, 10 s aired, not cut
            ("loa-1", "play.finished", T0, {"key": "a", **play, "outcome": "preempted",
                                            "played_ms": 4_000, "resumes": True}),
            ("loa-1", "play.finished", T0 + 1, {"key": "a", **play, "resumed_from_ms": 4_000,
                                                "outcome": "completed", "played_ms": 6_000}),
            # cut by a power cut mid-play, told at the next start
            ("loa-1", "play.interrupted", T0 + 2, {"key": "b", **play, **cut,
                                                   "played_ms": 2_500, "reason": "power_loss"}),
            # resumed, and the rest cut by a crash before it started
            ("loa-1", "play.finished", T0 + 3, {"key": "c", **play, "outcome": "preempted",
                                                "played_ms": 1_000, "resumes": True}),
            ("loa-1", "play.interrupted", T0 + 4, {"key": "c", **play, **cut, "actual_ms": None,
                                                   "resumed_from_ms": 1_000, "played_ms": 0,
                                                   "reason": "crash"}),
            # stopped by the operator, and preempted with resuming turned off
            ("loa-1", "play.finished", T0 + 5, {"key": "d", **play, "outcome": "stopped",
                                                "played_ms": 500}),
            ("loa-1", "play.finished", T0 + 6, {"key": "e", **play, "outcome": "preempted",
                                                "played_ms": 700}),
            ("loa-1", "play.unheard_of", T0 + 7, {"key": "f"}),  # a newer agent's: left out
        ],
    )  # fmt: skip
    with sessions() as s:
        (row,) = proof_of_play(s, T0, T0 + DAY)
    assert (row.plays, row.completed, row.failed, row.missed) == (5, 1, 0, 0)
    assert row.total_played_ms == 4_000 + 6_000 + 2_500 + 1_000 + 500 + 700
    assert row.interrupted == 4
    assert row.interrupted_by_reason == {
        "power_loss": 1,
        "crash": 1,
        "stopped": 1,
        "preempted": 1,
    }
    assert row.interrupted_played_ms == 2_500 + 1_000 + 500 + 700
    line = to_csv(plays_sheet("en", "device", [row])).decode("utf-8-sig").splitlines()[1]
    assert line.endswith(
        ',4,"power cut: 1, the agent restarted: 1, stopped by an operator: 1, '
        'preempted by a higher level: 1",0:05,0,0:00'
    )


def test_queue_statistics_per_service_and_counter(sessions):
    def ticket(number: str, service: str, **extra: Any) -> dict[str, Any]:
        return {
            "ticket_id": number,
            "number": number,
            "service": service,
            "queue": service,
            "day": "2025-11-22",
            "priority": False,
            **extra,
        }

    def rated(number: str, service: str, counter: int, level: int) -> dict[str, Any]:
        labels = {"label_vi": "", "label_en": ""}
        return ticket(number, service, counter=counter, level=level, **labels)

    def issued(number: str, service: str) -> dict[str, Any]:
        return ticket(number, service, issued_ms=T0, people_ahead=0, wait_s=None)

    store(
        sessions,
        [
            ("kiosk-1", "ticket.issued", T0, issued("A001", "A")),
            ("kiosk-1", "ticket.issued", T0 + 1, issued("A002", "A")),
            ("kiosk-1", "ticket.issued", T0 + 2, issued("B001", "B")),
            (
                "kiosk-1",
                "ticket.called",
                T0 + 3,
                ticket("A001", "A", counter=1, recall=0, waited_ms=60_000),
            ),
            (
                "kiosk-1",
                "ticket.called",
                T0 + 4,
                ticket("A001", "A", counter=1, recall=1, waited_ms=90_000),
            ),
            (
                "kiosk-1",
                "ticket.served",
                T0 + 5,
                ticket("A001", "A", counter=1, service_ms=300_000),
            ),
            ("kiosk-1", "ticket.rated", T0 + 6, rated("A001", "A", 1, 5)),
            (
                "kiosk-1",
                "ticket.called",
                T0 + 7,
                ticket("A002", "A", counter=2, recall=0, waited_ms=180_000),
            ),
            ("kiosk-1", "ticket.skipped", T0 + 8, ticket("A002", "A", counter=2, reason="no_show")),
            (
                "kiosk-1",
                "ticket.called",
                T0 + 9,
                ticket("B001", "B", counter=10, recall=0, waited_ms=0),
            ),
            (
                "kiosk-1",
                "ticket.served",
                T0 + 10,
                ticket("B001", "B", counter=10, service_ms=100_000),
            ),
            ("kiosk-1", "ticket.rated", T0 + 11, rated("B001", "B", 10, 2)),
        ],
    )
    with sessions() as s:
        services = {r.key: r for r in queue_stats(s, T0, T0 + DAY, by="service")}
        counters = queue_stats(s, T0, T0 + DAY, by="counter")
    a = services["A"]
    assert (a.issued, a.called, a.served, a.no_shows) == (2, 2, 1, 1)
    assert (a.avg_wait_s, a.max_wait_s, a.avg_service_s) == (120.0, 180.0, 300.0)
    assert (a.ratings, a.avg_rating, a.ratings_by_level) == (1, 5.0, {5: 1})
    assert services["B"].avg_rating == 2.0 and services["B"].issued == 1
    assert [c.key for c in counters] == ["1", "2", "10"]  # numeric order
    assert (counters[0].served, counters[1].no_shows, counters[2].avg_service_s) == (1, 1, 100.0)

    text = to_csv(queue_sheet("en", "service", list(services.values()))).decode("utf-8-sig")
    table = list(csv.DictReader(io.StringIO(text)))
    assert table[0]["Service"] == "A" and table[0]["Average rating"] == "5"
    assert table[1]["Average wait (min:s)"] == "0:00"
    empty = to_csv(queue_sheet("vi", "service", [])).decode("utf-8-sig")  # still names columns
    assert empty.splitlines()[0].startswith("Dịch vụ,") and len(empty.splitlines()) == 1


def test_a_stored_body_that_does_not_fit_is_left_out_not_a_crash(sessions, caplog):
    """Ingest refuses such bodies; a row stored before it checked is logged and skipped."""
    play = {"key": "k", "origin": "command", "priority": 2, "planned_ms": T0, "actual_ms": T0}
    store(
        sessions,
        [
            ("loa-1", "play.missed", T0, {"key": "k", "reason": 5}),
            ("loa-1", "play.finished", T0 + 1, {**play, "outcome": "completed", "played_ms": 10}),
            ("kiosk-1", "ticket.called", T0 + 2, {"number": "A001", "counter": 1}),
        ],
    )
    with sessions() as s:
        (row,) = proof_of_play(s, T0, T0 + DAY)
        assert queue_stats(s, T0, T0 + DAY) == []
    assert (row.plays, row.missed, row.total_played_ms) == (1, 0, 10)
    assert "e0 of loa-1 left out of a report: bad_body: play.missed body: reason" in caplog.text


def test_a_relays_gaps_are_counted_with_their_length(sessions):
    """A relay's play.finished carries its gaps (broadcast.audio.relay): counted per device,
    failed relays (stopped by dead air) included, and in the CSV."""
    play = {"key": "vov", "origin": "command", "priority": 2, "planned_ms": T0, "actual_ms": T0}
    gaps = [{"offset_ms": 3_000, "length_ms": 11_500, "reason": "dropped"},
            {"offset_ms": 40_000, "length_ms": 4_000, "reason": "dead_air"}]  # fmt: skip
    relay = {**play, "outcome": "completed", "played_ms": 90_000, "relayed_ms": 74_500}
    dead = {**play, "outcome": "failed", "played_ms": 4_000, "relayed_ms": 0}
    dead["gaps"] = [{"offset_ms": 0, "length_ms": 4_000, "reason": "dead_air"}]
    store(
        sessions,
        [
            ("loa-1", "play.finished", T0, {**relay, "gaps": gaps}),
            ("loa-1", "play.finished", T0 + 1, dead),
            ("loa-2", "play.finished", T0 + 2, {**play, "outcome": "completed", "played_ms": 10}),
        ],
    )
    with sessions() as s:
        rows = {r.key: r for r in proof_of_play(s, T0, T0 + DAY)}
    assert (rows["loa-1"].relay_gaps, rows["loa-1"].relay_gap_ms) == (3, 19_500)
    assert (rows["loa-2"].relay_gaps, rows["loa-2"].relay_gap_ms) == (0, 0)
    sheet = to_csv(plays_sheet("en", "device", list(rows.values()))).decode("utf-8-sig")
    table = list(csv.DictReader(io.StringIO(sheet)))
    assert (table[0]["Relay gaps"], table[0]["Gap time (min:s)"]) == ("3", "0:20")


def test_queue_statistics_per_officer(sessions):
    """What each officer did: their calls, services, no-shows and the ratings of the
    citizens they served; a record made with no sign-in is nobody's."""

    def ticket(number: str, **extra: Any) -> dict[str, Any]:
        return {"ticket_id": number, "number": number, "service": "A", "queue": "A",
                "day": "2025-11-22", "priority": False, **extra}  # fmt: skip

    store(
        sessions,
        [
            ("kiosk-1", "ticket.called", T0,
             ticket("A001", counter=1, recall=0, waited_ms=60_000, officer="lan")),
            ("kiosk-1", "ticket.served", T0 + 1,
             ticket("A001", counter=1, service_ms=240_000, officer="lan")),
            ("kiosk-1", "ticket.rated", T0 + 2,
             ticket("A001", counter=1, level=4, label_vi="", label_en="", officer="lan")),
            ("kiosk-1", "ticket.called", T0 + 3,
             ticket("A002", counter=2, recall=0, waited_ms=120_000, officer="minh")),
            ("kiosk-1", "ticket.skipped", T0 + 4,
             ticket("A002", counter=2, reason="no_show", officer="minh")),
            ("kiosk-1", "ticket.called", T0 + 5,
             ticket("A003", counter=2, recall=0, waited_ms=30_000)),  # before sign-ins
        ],
    )  # fmt: skip
    with sessions() as s:
        by = {r.key: r for r in queue_stats(s, T0, T0 + DAY, by="officer")}
    assert set(by) == {"lan", "minh"}
    lan, minh = by["lan"], by["minh"]
    assert (lan.called, lan.served, lan.avg_service_s, lan.avg_rating) == (1, 1, 240.0, 4.0)
    assert (minh.called, minh.no_shows, minh.avg_wait_s, minh.ratings) == (1, 1, 120.0, 0)
    header = queue_sheet("vi", "officer", list(by.values())).headers[0]
    assert header == "Cán bộ"


def test_booked_against_walk_in_counts_waits_and_service_times_and_the_xlsx(sessions):
    import openpyxl

    from controller.web.spreadsheets import to_xlsx

    def ticket(number: str, **extra: Any) -> dict[str, Any]:
        base = {"ticket_id": number, "number": number, "service": "ho-tich", "queue": "ho-tich",
                "day": "2025-11-22", "priority": False}  # fmt: skip
        return base | extra

    def issued(number: str, **extra: Any) -> dict[str, Any]:
        return ticket(number, issued_ms=T0, people_ahead=0, wait_s=None, **extra)

    def called(number: str, waited_ms: int) -> dict[str, Any]:
        return ticket(number, counter=1, recall=0, waited_ms=waited_ms)

    store(
        sessions,
        [
            ("kiosk-1", "ticket.issued", T0, issued("A001")),  # an older agent: no field
            ("kiosk-1", "ticket.issued", T0 + 1, issued("A002", booked_slot_ms=T0 + 600_000)),
            ("kiosk-1", "ticket.issued", T0 + 2, issued("A003")),
            ("kiosk-1", "ticket.called", T0 + 3, called("A001", 300_000)),
            ("kiosk-1", "ticket.served", T0 + 4, ticket("A001", counter=1, service_ms=400_000)),
            ("kiosk-1", "ticket.called", T0 + 5, called("A002", 60_000)),
            ("kiosk-1", "ticket.served", T0 + 6, ticket("A002", counter=1, service_ms=200_000)),
            ("kiosk-1", "ticket.called", T0 + 7, called("A003", 500_000)),
            ("kiosk-1", "ticket.skipped", T0 + 8, ticket("A003", counter=1, reason="no_show")),
        ],
    )
    with sessions() as s:
        rows = {r.key: r for r in queue_stats(s, T0, T0 + DAY, by="booking")}
    booked, walk_in = rows["booked"], rows["walk_in"]
    assert (booked.issued, booked.called, booked.served, booked.no_shows) == (1, 1, 1, 0)
    assert (booked.avg_wait_s, booked.avg_service_s) == (60.0, 200.0)
    assert (walk_in.issued, walk_in.served, walk_in.no_shows) == (2, 1, 1)
    assert (walk_in.avg_wait_s, walk_in.max_wait_s, walk_in.avg_service_s) == (400.0, 500.0, 400.0)

    sheet = queue_sheet("vi", "booking", list(rows.values()))
    book = openpyxl.load_workbook(io.BytesIO(to_xlsx(sheet)))
    cells = [[c.value for c in row] for row in book.active.iter_rows()]
    assert cells[0][0] == "Đặt lịch / đến trực tiếp"
    assert [r[0] for r in cells[1:]] == ["Đặt lịch trước", "Đến trực tiếp"]
    assert cells[1][1] == 1 and cells[2][1] == 2
    text = to_csv(queue_sheet("en", "booking", list(rows.values()))).decode("utf-8-sig")
    assert "Booked ahead" in text and "Walk-in" in text and "walk_in" not in text
