"""The broadcasting pages in headless Chromium: sign in, upload a clip with its progress,
schedule it for a village (with the conflict preview first), and send an emergency
broadcast through its confirmation page; the app runs under uvicorn with its
station connected to a real Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from controller.auth.accounts import create_user
from controller.site.directory import Site
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import make_app, wait_connected
from tests.http_helpers import serve

RECORD_PROGRESS = """() => {
  const value = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, "value");
  Object.defineProperty(HTMLProgressElement.prototype, "value", {
    get() { return value.get.call(this); },
    set(v) {
      const seen = JSON.parse(sessionStorage.getItem("progress") || "[]");
      sessionStorage.setItem("progress", JSON.stringify([...seen, v]));
      value.set.call(this, v);
    },
  });
}"""


@pytest.fixture
def base_url(tmp_path: Path, site: Site, broker: Any) -> Iterator[str]:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'controller.db'}", site, broker.port)
    state = app.state.xaso
    with state.sessions() as db:
        create_user(
            db,
            state.auth.passwords,
            username="lan",
            display_name="Nguyễn Thị Lan",
            role="broadcaster",
            password="mot-mat-khau-dai",
            now_ms=state.now_ms(),
        )
        db.commit()
    with serve(app) as url:
        wait_connected(state)
        yield url


@pytest.fixture
def page(base_url: str) -> Iterator[Page]:
    with sync_playwright() as p:
        browser: Browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto(f"{base_url}/clips")  # not signed in: the sign-in page first
        page.fill("input[name=username]", "lan")
        page.fill("input[name=password]", "mot-mat-khau-dai")
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Thư viện âm thanh")
        yield page
        browser.close()


def test_upload_schedule_and_send_an_emergency_through_the_pages(
    page: Page, tmp_path: Path
) -> None:
    # upload with progress: the bar fills from XMLHttpRequest's upload events; what the
    # page sets is kept in sessionStorage, which outlives the reload after the upload
    page.evaluate(RECORD_PROGRESS)
    tone = tone_file(tmp_path / "canh-bao.wav", 880, 2.0)
    upload = page.locator("#upload")
    upload.locator("input[name=file]").set_input_files(str(tone))
    upload.locator("input[name=title]").fill("Cảnh báo bão")
    upload.locator("button[type=submit]").click()
    expect(page.locator(".ok")).to_have_text("Đã thêm «Cảnh báo bão».")
    row = page.locator("#clips tbody tr").first
    expect(row).to_contain_text("Cảnh báo bão")
    expect(row.locator("audio")).to_have_attribute(
        "src", f"/clips/{row.get_attribute('data-sha256')}/audio"
    )
    shown = page.evaluate("JSON.parse(sessionStorage.getItem('progress') || '[]')")
    assert shown[0] == 0 and shown[-1] == 100 and shown == sorted(shown), shown

    # schedule it for thôn 1: preview the conflicts first, then save
    page.click("nav >> text=Lịch phát")
    form = page.locator("#new-entry")
    form.locator("input[value='group:thon-1']").check()
    form.locator("select[name=clip]").select_option(label="Cảnh báo bão (2.0 s)")
    form.locator("input[name=from_day]").fill("06/01/2030")
    form.locator("input[name=times]").fill("06:30")
    form.locator("select[name=repeat]").select_option("daily")
    form.locator("input[name=label]").fill("Bản tin sáng")
    page.click("#preview-button")
    expect(page.locator("#preview")).to_contain_text("Không có xung đột")
    page.click("#new-entry button[type=submit] >> nth=0")
    expect(page.locator(".ok")).to_have_text("Đã lưu và gửi lịch phát.")
    expect(page.locator("#entries tbody tr").first).to_contain_text("Nhóm thon-1")
    page.goto(page.url.split("?")[0] + "?day=2030-01-06")
    loa_1 = page.locator("#calendar table[data-device=loa-1]")
    expect(loa_1).to_contain_text("Bản tin sáng")
    expect(loa_1).to_contain_text("06/01/2030 06:30:00")
    expect(page.locator("#calendar table[data-device=loa-2]")).to_contain_text("Không có gì phát.")

    # the emergency: chosen, confirmed on its own page, then listed
    page.click("nav >> text=Phát thanh")
    emergency = page.locator("#emergency")
    emergency.locator("input[value='group:all']").check()
    emergency.locator("select[name=clip]").select_option(label="Cảnh báo bão (2.0 s)")
    emergency.locator("input[name=label]").fill("Bão số 5")
    emergency.locator("button[type=submit]").click()
    expect(page.locator("h1")).to_have_text("Xác nhận phát khẩn cấp")
    expect(page.locator("#confirm-text")).to_contain_text("3 cụm loa: loa-1, loa-2, loa-3")
    page.click("#confirm-send")
    expect(page.locator(".ok")).to_contain_text("Đã gửi lệnh")
    latest = page.locator("#recent tbody tr").first
    expect(latest).to_contain_text("Khẩn cấp")
    expect(latest).to_contain_text("Bão số 5")
    expect(latest).to_contain_text("lan")
    for device in ("loa-1", "loa-2", "loa-3"):
        expect(latest.locator(".ack", has_text=device)).to_have_count(1)

    # and in English
    page.click("#lang-switch")
    expect(page.locator("#recent tbody tr").first).to_contain_text("Emergency")


def test_deleting_and_stopping_ask_first(page: Page, tmp_path: Path) -> None:
    """A delete or a stop asks in the page's language; dismissed, nothing happens."""
    tone = tone_file(tmp_path / "chuong.wav", 880, 1.0)
    page.set_input_files("input[name=file]", str(tone))
    page.fill("#upload input[name=title]", "Chuông báo")
    page.click("#upload button[type=submit]")
    row = page.locator("#clips tbody tr", has_text="Chuông báo")
    expect(row).to_have_count(1)

    asked: list[str] = []

    def answer(accept: bool) -> None:
        def on_dialog(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", on_dialog)

    answer(False)
    row.locator("button[type=submit]").click()
    expect(row).to_have_count(1)  # dismissed: still there
    assert asked == ["Xoá tệp âm thanh «Chuông báo»? Không thể hoàn tác."]
    answer(True)
    row.locator("button[type=submit]").click()
    expect(page.locator("#clips tbody tr", has_text="Chuông báo")).to_have_count(0)

    page.click("nav >> text=Phát thanh")
    stop = page.locator("#stop")
    stop.locator("input[value='group:thon-1']").check()
    answer(False)
    stop.locator("button[type=submit]").click()
    assert asked[-1].startswith("Dừng phát trên các nơi đã chọn?")
    expect(page.locator(".ok")).to_have_count(0)  # dismissed: no stop was sent


def test_weekdays_at_two_times_for_two_villages_in_one_form_and_a_speaker_found_by_search(
    page: Page, tmp_path: Path
) -> None:
    """One form makes «Thứ 2–Thứ 6 lúc 06:30 và 17:00 cho thôn 1 và thôn 2»; on the
    broadcasts page a speaker is found by typing part of its id, and played to."""
    tone = tone_file(tmp_path / "ban-tin.wav", 660, 1.0)
    page.set_input_files("input[name=file]", str(tone))
    page.fill("#upload input[name=title]", "Bản tin xã")
    page.click("#upload button[type=submit]")
    expect(page.locator("#clips tbody tr", has_text="Bản tin xã")).to_have_count(1)

    page.click("nav >> text=Lịch phát")
    form = page.locator("#new-entry")
    form.locator("input[value='group:thon-1']").check()
    form.locator("input[value='group:thon-2']").check()
    form.locator("select[name=clip]").select_option(label="Bản tin xã (1.0 s)")
    form.locator("select[name=repeat]").select_option("weekdays")
    form.locator("input[name=from_day]").fill("07/01/2030")
    form.locator("input[name=times]").fill("06:30, 17:00")
    form.locator("input[name=label]").fill("Bản tin thôn")
    page.click("#new-entry button[type=submit] >> nth=0")
    expect(page.locator(".ok")).to_have_text("Đã lưu và gửi lịch phát.")
    entries = page.locator("#entries tbody tr")
    expect(entries).to_have_count(1)  # one entry, not four
    expect(entries.first).to_contain_text("Nhóm thon-1, Nhóm thon-2")
    expect(entries.first.locator(".times")).to_have_text("06:30, 17:00")
    page.goto(page.url.split("?")[0] + "?day=2030-01-11&span=week")  # Friday to Thursday
    for device in ("loa-1", "loa-2", "loa-3"):
        plan = page.locator(f"#calendar table[data-device={device}]")
        expect(plan.locator("tbody tr", has_text="Bản tin thôn")).to_have_count(2 * 5)
        expect(plan).to_contain_text("11/01/2030 06:30:00")
        expect(plan).to_contain_text("11/01/2030 17:00:00")
        expect(plan).not_to_contain_text("12/01/2030")  # Saturday: nothing

    page.click("nav >> text=Phát thanh")
    play = page.locator("#play")
    expect(play.locator("input[value='device:loa-1']")).to_have_count(1)  # the first page
    page.locator("#target-search input[name=q]").fill("LOA-2")
    expect(play.locator("input[value='device:loa-1']")).to_have_count(0)
    expect(page.locator("#target-search [data-target-count]")).to_have_text("Tìm thấy 1 cụm loa")
    play.locator("input[value='device:loa-2']").check()
    page.locator("#target-search input[name=q]").fill("khong-co")
    expect(page.locator("#target-search [data-target-count]")).to_contain_text(
        "Không tìm thấy cụm loa nào"
    )
    expect(play.locator("input[value='device:loa-2']")).to_be_checked()  # a tick stays
    play.locator("select[name=clip]").select_option(label="Bản tin xã (1.0 s)")
    play.locator("input[name=label]").fill("Thông báo loa 2")
    play.locator("button[type=submit]").click()
    expect(page.locator(".ok")).to_contain_text("Đã gửi lệnh")
    latest = page.locator("#recent tbody tr").first
    expect(latest).to_contain_text("Thông báo loa 2")
    expect(latest).to_contain_text("Cụm loa loa-2")
    expect(latest).not_to_contain_text("loa-1")
