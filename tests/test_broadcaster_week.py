"""A broadcaster's week in headless Chromium, in Vietnamese, against a real agent.

With approval on, a broadcaster uploads a clip and makes a spoken one from
text through the clips page, makes one schedule entry for weekdays at 06:30
and 17:00 for thôn 2, and plays the spoken notice now; a leader approves both.
The schedule document reaches the speaker only then, the notice plays on its
WAV sink, and the per-bulletin report (the page, and its XLSX opened with
openpyxl) shows that play. The app runs under uvicorn with its station on a
real Mosquitto; the speaker agent loa-2 (the one speaker of thôn 2) runs in its
own process. Every page visited is read for English code words and raw error
text (tests/page_text.py).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cli.brokers.mosquitto import free_port
from controller.auth.accounts import create_user
from controller.site.directory import Site
from tests.audio_helpers import dominant_hz, read_samples, tone_file
from tests.broadcast_api_helpers import PASSWORD, make_app, wait_connected
from tests.http_helpers import serve
from tests.page_text import plain_vietnamese

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
WAIT_MS = 90_000  # a shared, loaded machine: generous; the outcome is what is asserted
USERS = {"quan": "admin", "lan": "broadcaster", "hung": "leader"}
NOTICE = "Thông báo tiêm chủng"  # the spoken clip, played now
MORNING = "Bản tin sáng"  # the uploaded clip, scheduled


@pytest.fixture
def base_url(tmp_path: Path, site: Site, broker: Any) -> Iterator[str]:
    port = free_port()  # the agents download clips from the app's own address
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'controller.db'}", site, broker.port, port)
    state = app.state.xaso
    with state.sessions() as db:
        for username, role in USERS.items():
            create_user(
                db,
                state.auth.passwords,
                username=username,
                display_name=username.title(),
                role=role,
                password=PASSWORD,
                now_ms=state.now_ms(),
            )
        state.station.gate.set_required(db, True, by="quan")
        db.commit()
    state.fleet.sync_registry()
    with serve(app, port) as url:
        wait_connected(state)
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        expect.set_options(timeout=WAIT_MS)
        yield browser
        expect.set_options(timeout=5_000)  # Playwright's default, for the other tests
        browser.close()


def signed_in(browser: Browser, base_url: str, username: str) -> Page:
    page = browser.new_context(accept_downloads=True).new_page()  # its own cookies
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base_url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()
    plain_vietnamese(page)
    return page


def recordings(played: Path) -> list[dict[str, Any]]:
    log = played / "played.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def next_monday() -> dt.date:
    today = dt.datetime.now(TZ).date()
    return today + dt.timedelta(days=7 - today.weekday())


def test_a_broadcasters_week_in_vietnamese_with_no_code_words(
    browser: Browser, base_url: str, fleet: Any, probe: Any, tmp_path: Path
) -> None:
    played = tmp_path / "played"
    fleet.spawn("loa-2", sections={"speaker": {"sink": "wav", "wav_dir": str(played)}})
    lan = signed_in(browser, base_url, "lan")

    # the clips page: an upload, then a spoken notice from text
    lan.click("nav >> text=Thư viện âm thanh")
    upload = lan.locator("#upload")
    upload.locator("input[name=file]").set_input_files(
        str(tone_file(tmp_path / "sang.wav", 440, 2.0))
    )
    upload.locator("input[name=title]").fill(MORNING)
    upload.locator("button[type=submit]").click()
    expect(lan.locator(".ok")).to_have_text(f"Đã thêm «{MORNING}».")
    plain_vietnamese(lan)
    tts = lan.locator("#tts")
    tts.locator("textarea[name=text]").fill(
        "Thông báo: sáng thứ Bảy, trạm y tế xã tiêm chủng cho trẻ dưới năm tuổi."
    )
    tts.locator("input[name=title]").fill(NOTICE)
    tts.locator("button[type=submit]").click()
    spoken = lan.locator("#clips tbody tr", has_text=NOTICE)
    expect(spoken).to_have_count(1)
    expect(lan.locator("#clips tbody tr", has_text=MORNING)).to_have_count(1)
    plain_vietnamese(lan)

    # one entry: weekdays at 06:30 and 17:00 for thôn 2, waiting for a leader
    monday = next_monday()
    lan.click("nav >> text=Lịch phát")
    form = lan.locator("#new-entry")
    form.locator("input[value='group:thon-2']").check()
    form.locator("select[name=clip]").select_option(label=f"{MORNING} (2.0 s)")
    form.locator("select[name=repeat]").select_option("weekdays")
    form.locator("input[name=from_day]").fill(monday.strftime("%d/%m/%Y"))
    form.locator("input[name=times]").fill("06:30, 17:00")
    form.locator("input[name=label]").fill(MORNING)
    lan.click("#new-entry button[type=submit] >> nth=0")
    expect(lan.locator(".ok")).to_contain_text("đang chờ lãnh đạo duyệt")
    entry = lan.locator("#entries tbody tr", has_text=MORNING)
    expect(entry.locator(".times")).to_have_text("06:30, 17:00")
    expect(entry.locator(".approval")).to_have_text("Chờ duyệt")
    plain_vietnamese(lan)

    # the spoken notice, now, for thôn 2: held too
    lan.click("nav >> text=Phát thanh")
    play = lan.locator("#play")
    play.locator("input[value='group:thon-2']").check()
    options = play.locator("select[name=clip] option", has_text=NOTICE)
    play.locator("select[name=clip]").select_option(options.get_attribute("value"))
    play.locator("input[name=label]").fill(NOTICE)
    play.locator("button[type=submit]").click()
    expect(lan.locator(".ok")).to_contain_text("đang chờ lãnh đạo duyệt")
    plain_vietnamese(lan)
    assert [m.topic for m in probe.messages if m.topic.endswith(("/cmd", "/schedule"))] == []
    assert recordings(played) == []

    # the leader approves both
    hung = signed_in(browser, base_url, "hung")
    hung.click("nav >> text=Chờ duyệt")
    for label in (MORNING, NOTICE):
        waiting = hung.locator("#pending tbody tr", has_text=label)
        expect(waiting).to_have_count(1)
        expect(waiting).to_contain_text("Nhóm thon-2")
        plain_vietnamese(hung)
        waiting.locator("button", has_text="Duyệt, cho phát").click()
        expect(hung.locator(".ok")).to_have_text("Đã duyệt: nội dung đã được gửi tới cụm loa.")
    expect(hung.locator("#pending")).to_contain_text("Không có việc nào chờ duyệt.")
    plain_vietnamese(hung)

    # the speaker takes the week's document, and plays the notice
    doc = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-2/schedule", timeout=90)
    items = doc.json()["body"]["items"]  # one per time of day
    assert [i["label"] for i in items] == [MORNING, MORNING], items
    assert probe.ack_for("loa-2", doc.json()["id"], timeout=90)["ok"]
    deadline = time.monotonic() + 90
    while not (aired := recordings(played)):
        assert time.monotonic() < deadline, "loa-2 did not play the notice"
        time.sleep(0.2)
    (notice,) = aired
    assert notice["label"] == NOTICE, notice
    rate, samples = read_samples(played / notice["file"])
    assert len(samples) / rate > 1.0 and dominant_hz(samples, rate) > 80  # speech, not silence

    # the broadcasts page: the notice sent, and the speaker's answer
    lan.click("nav >> text=Phát thanh")
    sent = lan.locator("#recent tbody tr", has_text=NOTICE)
    expect(sent.locator(".acks")).to_have_text("loa-2 ✓")
    plain_vietnamese(lan)

    # the calendar of the coming week says what will play, twice each weekday
    lan.goto(f"{base_url}/schedules?day={monday.isoformat()}&span=week")
    plan = lan.locator("#calendar table[data-device=loa-2]")
    expect(plan.locator("tbody tr", has_text=MORNING)).to_have_count(2 * 5)
    expect(plan).to_contain_text(f"{monday:%d/%m/%Y} 06:30:00")
    expect(plan).to_contain_text("Sẽ phát trọn vẹn")
    plain_vietnamese(lan)

    # the play log per bulletin: the page, then its XLSX
    lan.click("nav >> text=Báo cáo")
    plain_vietnamese(lan)
    lan.click("text=Nhật ký phát từng bản tin")
    row = lan.locator("#report tr", has_text=NOTICE)
    deadline = time.monotonic() + 90
    while row.count() == 0:  # the play's record comes home through the ingest
        assert time.monotonic() < deadline, "the play did not reach the report"
        time.sleep(1)
        lan.reload()
    expect(row).to_contain_text("loa-2")
    expect(row).to_contain_text("Toàn xã, thon-2")
    expect(row).to_contain_text("Phát trọn vẹn")
    plain_vietnamese(lan)
    with lan.expect_download() as download:
        lan.click("#report-xlsx")
    name = download.value.suggested_filename
    assert name.startswith("nhat-ky-phat_") and name.endswith(".xlsx"), name
    download.value.save_as(tmp_path / name)
    sheet = openpyxl.load_workbook(tmp_path / name).active
    assert sheet is not None
    header, *cells = list(sheet.values)
    assert header[:4] == ("Giờ dự kiến", "Giờ phát thực tế", "Bản tin", "Cụm loa")
    (got,) = [c for c in cells if c[2] == NOTICE]
    assert got[3] == "loa-2" and got[7] == "Phát trọn vẹn", got
    started = dt.datetime.fromtimestamp(notice["started_ms"] / 1000, TZ).replace(tzinfo=None)
    assert isinstance(got[1], dt.datetime) and abs(got[1] - started) < dt.timedelta(seconds=1)
    aired_s = len(samples) / rate
    assert isinstance(got[6], dt.timedelta), got
    assert abs(got[6].total_seconds() - aired_s) < 0.5, (got, aired_s)

    # and in English: the same words there too
    lan.click("#lang-switch")
    expect(row).to_contain_text("Whole commune, thon-2")
    expect(row).to_contain_text("Played in full")
    lan.click("nav >> text=Clip library")
    expect(lan.locator("#clips tbody tr", has_text=NOTICE)).to_contain_text("Text to speech")
    expect(lan.locator("#clips tbody tr", has_text=MORNING)).to_contain_text("Uploaded file")
