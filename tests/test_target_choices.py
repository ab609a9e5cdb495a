"""Targets at 10,000 speakers: the groups listed, speakers found by a paginated search;
and the long lists (clips, entries, the calendar's speakers) paged on the server.

The real app on SQLite and PostgreSQL, a registry of 10,000 speakers in 100
villages (bench/broadcasts_page.py writes it). The broadcasts page was 3.3 MB
with 29,103 checkboxes; it must weigh under 300 KB, find a speaker without
script (?q=) and as JSON (GET /api/targets), and page through the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.broadcasts_page import many_speakers
from cli.brokers.mosquitto import free_port
from controller.db.broadcast_tables import ClipRow, ScheduleRow
from controller.site.directory import Site
from tests.broadcast_api_helpers import Ctl, make_app, refused

SPEAKERS = 10_000
PAGE_BUDGET_BYTES = 300_000


@pytest.fixture
def big(tmp_path: Path, database_url: str, site: Site) -> Iterator[Ctl]:
    many_speakers(site, SPEAKERS)
    app = make_app(tmp_path, database_url, site, free_port())  # no broker: pages still serve
    yield Ctl(app, tmp_path)
    app.state.xaso.engine.dispose()


def _ticks(page: str) -> list[str]:
    return re.findall(r'name="target" value="([^"]+)"', page)


def test_the_broadcasts_page_at_10000_speakers_weighs_under_300_kb_and_lists_every_group(
    big: Ctl,
) -> None:
    page = big.call("broadcaster", "GET", "/broadcasts")
    assert page.status_code == 200, page.text[:500]
    assert len(page.content) < PAGE_BUDGET_BYTES, len(page.content)
    ticks = _ticks(page.text)
    groups = [t for t in ticks if t.startswith("group:")]
    assert groups[:2] == ["group:all", "group:thon-000"] and len(groups) == 3 * 101
    assert "Toàn xã (mọi cụm loa)" in page.text and "Nhóm all" not in page.text
    devices = [t for t in ticks if t.startswith("device:")]
    assert devices == 3 * [f"device:loa-{i:05d}" for i in range(20)]  # the first page
    assert "Trang 1/500" in page.text and 'href="/broadcasts?tpage=2"' in page.text
    schedules = big.call("broadcaster", "GET", "/schedules")  # its form's lists too
    assert schedules.status_code == 200 and len(schedules.content) < PAGE_BUDGET_BYTES


def test_a_speaker_is_found_by_id_or_name_without_script_and_the_results_are_paged(
    big: Ctl,
) -> None:
    found = big.call("broadcaster", "GET", "/broadcasts", params={"q": "LOA-0999"})
    devices = sorted({t for t in _ticks(found.text) if t.startswith("device:")})
    assert devices == [f"device:loa-0999{n}" for n in range(10)]
    assert "Tìm thấy 10 cụm loa" in found.text
    by_name = big.call("broadcaster", "GET", "/broadcasts", params={"q": "số 4321"})
    assert {t for t in _ticks(by_name.text) if t.startswith("device:")} == {"device:loa-04321"}
    nothing = big.call("broadcaster", "GET", "/broadcasts", params={"q": "khong-co"})
    assert "Không tìm thấy cụm loa nào" in nothing.text
    second = big.call("broadcaster", "GET", "/broadcasts", params={"q": "loa-01", "tpage": "2"})
    shown = [t for t in _ticks(second.text) if t.startswith("device:")][:20]
    assert shown == [f"device:loa-01{n:03d}" for n in range(20, 40)]
    assert "Trang 2/50" in second.text and "Đang xem 21–40 trong tổng số 1000" in second.text
    past = big.call("broadcaster", "GET", "/broadcasts", params={"q": "loa-01", "tpage": "x9"})
    assert "Trang 1/50" in past.text  # a page number that is not one: the first page
    last = big.call("broadcaster", "GET", "/broadcasts", params={"q": "loa-01", "tpage": "999"})
    assert "Trang 50/50" in last.text  # past the end: the last page


def test_the_targets_api_pages_its_search_and_refuses_bad_input_in_both_languages(
    big: Ctl,
) -> None:
    got = big.call("officer", "GET", "/api/targets", params={"q": "loa-0999", "page": 1})
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["total"], body["pages"], body["page"]) == (10, 1, 1)
    assert body["devices"][0] == {"value": "device:loa-09990", "id": "loa-09990",
                                  "name": "Cụm loa số 9990",
                                  "label": "Cụm loa loa-09990 — Cụm loa số 9990"}  # fmt: skip
    every = big.call("officer", "GET", "/api/targets", params={"page": 500}).json()
    assert every["pages"] == 500 and [d["id"] for d in every["devices"]][-1] == "loa-09999"
    assert big.call("officer", "GET", "/api/targets", params={"page": 501}).json()["devices"] == []
    for params in ({"page": 0}, {"page": "hai"}, {"q": "x" * 49}):
        refused(big.call("officer", "GET", "/api/targets", params=params), 422)
    assert big.client.get("/api/targets").status_code == 401


def test_long_lists_of_clips_and_entries_are_paged_with_a_vietnamese_pager(big: Ctl) -> None:
    with big.app.state.xaso.sessions.begin() as db:
        for n in range(120):
            db.add(ClipRow(sha256=f"{n:064x}", title=f"Bản tin {n}", duration_ms=1000,
                           format="mp3", size_bytes=10, source="upload", lang="vi",
                           created_by="lan", created_ms=n))  # fmt: skip
        db.flush()
        for n in range(60):
            db.add(ScheduleRow(item_id=f"muc-{n}", target_kind="group", target_id="thon-001",
                               label=f"Mục {n}", level="normal", priority=2, rrule="FREQ=DAILY",
                               tz="Asia/Ho_Chi_Minh", dtstart="2030-01-07T06:30:00", exdates=[],
                               clip_sha256=f"{n:064x}", created_by="lan", created_ms=n,
                               updated_ms=n))  # fmt: skip
    clips = big.call("admin", "GET", "/clips")
    assert clips.text.count("<tr data-sha256=") == 50 and "Bản tin 119" in clips.text
    assert "Trang 1/3 · Đang xem 1–50 trong tổng số 120" in clips.text
    assert 'href="/clips?page=2"' in clips.text and "Trang sau ›" in clips.text
    last = big.call("admin", "GET", "/clips", params={"page": 3})
    assert last.text.count("<tr data-sha256=") == 20 and "Bản tin 0<" in last.text
    assert "‹ Trang trước" in last.text and "Trang sau" not in last.text
    entries = big.call("officer", "GET", "/schedules", params={"page": 2})
    assert entries.text.count('<tr data-id="') == 10 and "Mục 9<" in entries.text
    assert "Trang 2/2 · Đang xem 51–60 trong tổng số 60" in entries.text
    calendar = big.call("officer", "GET", "/schedules", params={"cpage": 200})
    assert calendar.text.count('<table class="plan"') == 50
    assert 'data-device="loa-09999"' in calendar.text and "Trang 200/200" in calendar.text
    english = big.call("admin", "GET", "/clips", params={"page": 2, "lang": "en"})
    assert "Page 2 of 3 · Showing 51–100 of 120" in english.text
