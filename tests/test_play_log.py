"""Proof of play per bulletin (controller/fleet/play_log.py) and the files an office opens.

A play's records fold into one row: a preempted play that resumed is one row
with both parts aired; a cut, a miss and a failure say why in words. The XLSX
is typed (dates are dates, durations numbers) and the CSV reads in Excel set
to Vietnamese (semicolons, decimal commas).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import openpyxl
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from controller import i18n
from controller.db.engine import make_engine, session_factory, upgrade
from controller.fleet.ingest_writes import Item, sync_devices_from_site, write_batch
from controller.fleet.play_log import play_log, play_results
from controller.web.report_sheets import LOCAL_TZ, play_log_sheet
from controller.web.routes.reports import parse_day
from controller.web.spreadsheets import Sheet, minutes_seconds, to_csv, to_xlsx
from protocol.uplink import Event

T0 = 1_764_718_200_000  # 03/12/2025 06:30 in Vietnam
HOUR = 3_600_000


@pytest.fixture
def sessions(database_url: str, site: Any, broker: Any) -> Iterator[sessionmaker[Session]]:
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


def play(key: str, planned: int, **extra: Any) -> dict[str, Any]:
    return {"key": key, "origin": "schedule", "priority": 2, "planned_ms": planned,
            "label": "Bản tin sáng", "item_id": "sang"} | extra  # fmt: skip


def test_each_play_is_one_row_with_what_aired_and_why(sessions):
    done = {"actual_ms": T0 + 40, "outcome": "completed", "played_ms": 300_000}
    store(
        sessions,
        [
            # completed on loa-1
            ("loa-1", "play.finished", T0 + 300_040, play("a", T0) | done),
            # on loa-2: preempted by an emergency two minutes in, the rest resumed after it
            ("loa-2", "play.finished", T0 + 120_000,
             play("a", T0) | done | {"outcome": "preempted", "played_ms": 120_000,
                                     "resumes": True}),
            ("loa-2", "play.finished", T0 + 400_000,
             play("a", T0) | done | {"actual_ms": T0 + 220_000, "played_ms": 180_000,
                                     "resumed_from_ms": 120_000}),
            # on loa-3: a power cut 50 s in, told at the next boot
            ("loa-3", "play.interrupted", T0 + 900_000,
             play("a", T0) | {"actual_ms": T0 + 40, "played_ms": 50_000,
                              "checkpoint_ms": T0 + 50_000, "reason": "power_loss"}),
            # the evening one: missed on loa-1 (off), failed on loa-2, a new reason on loa-3
            ("loa-1", "play.missed", T0 + 12 * HOUR, play("b", T0 + 12 * HOUR,
                                                          reason="device_down")),
            ("loa-2", "play.finished", T0 + 12 * HOUR,
             play("b", T0 + 12 * HOUR) | {"actual_ms": None, "outcome": "failed",
                                          "played_ms": 0, "error": "decoder"}),
            ("loa-3", "play.missed", T0 + 12 * HOUR, play("b", T0 + 12 * HOUR,
                                                          reason="cosmic_ray")),
            # the next day's: out of the period
            ("loa-1", "play.finished", T0 + 24 * HOUR,
             play("c", T0 + 24 * HOUR) | done | {"actual_ms": T0 + 24 * HOUR}),
        ],
    )  # fmt: skip
    with sessions() as s:
        rows = play_log(s, T0 - HOUR, T0 + 23 * HOUR)
    got = [(r.device_id, r.key, r.result, r.reason, r.played_ms) for r in rows]
    assert got == [
        ("loa-1", "a", "completed", "", 300_000),
        ("loa-2", "a", "completed", "", 300_000),  # one play, both parts
        ("loa-3", "a", "cut", "power_loss", 50_000),
        ("loa-1", "b", "missed", "device_down", 0),
        ("loa-2", "b", "failed", "failed", 0),
        ("loa-3", "b", "missed", "cosmic_ray", 0),
    ]
    assert rows[1].actual_ms == T0 + 40 and rows[3].actual_ms is None
    assert rows[0].groups == ("all", "thon-1"), rows[0]
    assert rows[0].label == "Bản tin sáng"
    with sessions() as s:
        assert [r.key for r in play_log(s, T0 - HOUR, T0 + 23 * HOUR, "loa-2")] == ["a", "b"]

    sheet = play_log_sheet("vi", rows)
    assert sheet.headers[0] == "Giờ dự kiến"
    results = [(row[7], row[8]) for row in sheet.rows]
    assert results == [
        ("Phát trọn vẹn", ""),
        ("Phát trọn vẹn", ""),
        ("Bị ngắt giữa chừng", "mất điện"),
        ("Không phát", "thiết bị tắt hoặc mất điện lúc đến giờ"),
        ("Lỗi khi phát", "lỗi khi phát"),
        ("Không phát", "khác (cosmic_ray)"),  # a newer agent's reason: shown, not hidden
    ]
    assert sheet.rows[0][0] == dt.datetime(2025, 12, 3, 6, 30, tzinfo=LOCAL_TZ)
    assert sheet.rows[0][5] == "Thông thường"
    assert sheet.rows[0][4] == "Toàn xã, thon-1"  # the group of every speaker, by what it is


def store_each(sessions: sessionmaker[Session], events: list[tuple[str, str, int, dict]]):
    """Each record in its own batch (as a speaker's outbox delivers them over hours)."""
    for n, (dev, t, ts, body) in enumerate(events):
        with sessions.begin() as s:
            write_batch(
                s, [Item(dev, "event", Event(id=f"s{n}", type=t, ts=ts, body=body), ts)], ts
            )


def test_a_play_told_in_parts_over_batches_and_out_of_order_folds_as_if_told_at_once(sessions):
    done = {"actual_ms": T0 + 40, "outcome": "completed", "played_ms": 180_000}
    cut = play("a", T0) | done | {"outcome": "preempted", "played_ms": 120_000, "resumes": True}
    rest = play("a", T0) | done | {"actual_ms": T0 + 220_000, "resumed_from_ms": 120_000}
    parts = [
        ("loa-1", "play.finished", T0 + 120_000, cut),
        ("loa-1", "play.finished", T0 + 400_000, rest),
        (
            "loa-1",
            "play.interrupted",
            T0 + 900_000,  # then the rest's power cut, told late
            rest | {"played_ms": 50_000, "checkpoint_ms": T0 + 50_000, "reason": "power_loss"},
        ),
    ]
    store(sessions, [(d, t, ts, b | {"key": "once"}) for d, t, ts, b in parts])
    store_each(sessions, [parts[2], parts[0], parts[1]])  # the last first, then the others
    store_each(sessions, [parts[2]])  # a redelivery (its id again): stored once, folded once
    with sessions() as s:
        later, once = play_log(s, T0 - HOUR, T0 + HOUR)
    assert (later.key, once.key) == ("a", "once")
    assert vars(later) | {"key": "once"} == vars(once)
    assert (once.result, once.reason, once.played_ms) == ("cut", "power_loss", 350_000)
    assert once.actual_ms == T0 + 40


def test_the_log_counts_and_pages_in_sql_without_reading_events(sessions):
    missed = [
        ("loa-1" if n % 2 else "loa-2", "play.missed", T0 + n,
         play(f"k{n:02d}", T0 + n * 1000, reason="device_down"))
        for n in range(30)
    ]  # fmt: skip
    store(sessions, missed)
    seen: list[str] = []
    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: seen.append(sql))
    with sessions() as s:
        some = play_log(s, T0 - HOUR, T0 + HOUR, offset=10, limit=5)
        counted = play_results(s, T0 - HOUR, T0 + HOUR)
    assert [r.key for r in some] == [f"k{n:02d}" for n in range(10, 15)]
    assert counted == {"missed": 30}
    assert len(seen) == 3  # the page, its speakers' groups, the counts
    assert not [sql for sql in seen if "FROM events" in sql]


def test_xlsx_keeps_types_and_csv_reads_in_vietnamese_excel():
    when = dt.datetime(2025, 12, 3, 6, 30, 5, tzinfo=LOCAL_TZ)
    sheet = Sheet("Nhật ký", ["Giờ", "Bản tin", "Thời lượng", "Điểm"])
    sheet.rows.append([when, "Bão số 5", dt.timedelta(minutes=12, seconds=5), 4.5])
    sheet.rows.append([None, "Đất đai; thuế", dt.timedelta(hours=2, seconds=3), None])

    book = openpyxl.load_workbook(io.BytesIO(to_xlsx(sheet)))
    ws = book.active
    assert ws is not None and ws.title == "Nhật ký"
    header, first, second = list(ws.values)
    assert header == ("Giờ", "Bản tin", "Thời lượng", "Điểm")
    assert first == (when.replace(tzinfo=None), "Bão số 5", dt.timedelta(seconds=725), 4.5)
    assert second[0] is None and second[2] == dt.timedelta(seconds=7203)
    assert ws["A2"].number_format == "dd/mm/yyyy hh:mm:ss"
    assert ws["C2"].number_format == "[m]:ss"

    text = to_csv(sheet, "semicolon")
    assert text.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(text.decode("utf-8-sig")), delimiter=";"))
    assert rows[1] == ["03/12/2025 06:30:05", "Bão số 5", "12:05", "4,5"]
    assert rows[2] == ["", "Đất đai; thuế", "120:03", ""]  # quoted, not split
    comma = list(csv.reader(io.StringIO(to_csv(sheet).decode("utf-8-sig"))))
    assert comma[1][3] == "4.5"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (59.6, "1:00"), (725, "12:05"), (7203, "120:03")]
)
def test_durations_read_as_minutes_and_seconds(seconds: float, text: str):
    assert minutes_seconds(dt.timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("bad", ["32/12/2025", "2025/12/03", "03-12-2025", "hôm nay", "12/13/2025"])
def test_a_day_that_is_not_a_date_is_refused_in_words(bad: str):
    with pytest.raises(i18n.Refusal) as refused:
        parse_day(bad)
    assert refused.value.status == 422
    assert "ngày/tháng/năm" in i18n.t("vi", refused.value.key, **refused.value.params)


def test_a_day_as_typed_or_as_a_picker_sends_it():
    assert parse_day("3/12/2025") == parse_day("2025-12-03") == dt.date(2025, 12, 3)
    assert parse_day("") is None and parse_day(None) is None
