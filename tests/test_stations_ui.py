"""The stations pages in headless Chromium: add a station (a bad address refused in
Vietnamese), relay it now to a village from the broadcasts page and stop it, schedule it
daily, and delete it only after asking; the app runs under uvicorn with its station
connected to a real Mosquitto, and a probe reads the command the speakers get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.audio_helpers import tone_file
from tests.test_controller_broadcast_ui import base_url, page

__all__ = ["base_url", "page"]  # the fixtures, imported for pytest

VOV1 = "https://str.vov.gov.vn/vov1"


def _answer(page: Page, asked: list[str], accept: bool) -> None:
    def on_dialog(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", on_dialog)


def test_a_station_is_added_relayed_now_scheduled_and_deleted_from_the_pages(
    page: Page, tmp_path: Path, fleet: Any
) -> None:
    probe = fleet.probe()
    page.set_input_files("input[name=file]", str(tone_file(tmp_path / "cho.wav", 330, 1.0)))
    page.fill("#upload input[name=title]", "Nhạc chờ")
    page.click("#upload button[type=submit]")
    # preparing the clip (loudness) takes a while on a loaded machine
    expect(page.locator("#clips tbody tr", has_text="Nhạc chờ")).to_have_count(1, timeout=60_000)

    page.click("nav >> text=Đài tiếp sóng")
    expect(page.locator("h1")).to_have_text("Đài tiếp sóng")
    form = page.locator("#new-station")
    form.locator("input[name=name]").fill("VOV1")
    form.locator("input[name=url]").fill("ftp://str.vov.gov.vn/vov1")
    form.locator("button[type=submit]").click()
    expect(page.locator(".error")).to_contain_text("phải bắt đầu bằng http:// hoặc https://")
    expect(page.locator("#stations")).to_contain_text("Chưa có đài nào.")
    form.locator("input[name=name]").fill("VOV1")
    form.locator("input[name=url]").fill(VOV1)
    form.locator("select[name=level]").select_option("priority")
    form.locator("select[name=on_failure]").select_option("fallback")
    form.locator("select[name=fallback]").select_option(label="Nhạc chờ (1.0 s)")
    form.locator("button[type=submit]").click()
    expect(page.locator(".ok")).to_have_text("Đã lưu đài «VOV1».")
    row = page.locator("#stations tbody tr", has_text="VOV1")
    expect(row).to_contain_text("Ưu tiên")
    expect(row).to_contain_text("Phát tệp thay thế: Nhạc chờ")

    # relay now: a duration that is not a number of minutes is refused in words
    page.click("nav >> text=Phát thanh")
    relay = page.locator("#relay")
    relay.locator("input[value='group:thon-1']").check()
    relay.locator("select[name=station_id]").select_option(label="VOV1 (Ưu tiên)")
    minutes = relay.locator("input[name=minutes]")
    minutes.evaluate("e => { e.type = 'text'; e.removeAttribute('min'); }")
    minutes.fill("ba mươi")
    relay.locator("button[type=submit]").click()
    expect(page.locator(".error")).to_contain_text("số phút, từ 1 đến 1440")
    relay = page.locator("#relay")
    relay.locator("input[value='group:thon-1']").check()
    relay.locator("input[name=minutes]").fill("15")
    relay.locator("button[type=submit]").click()
    expect(page.locator(".ok")).to_contain_text("Đã gửi lệnh")
    latest = page.locator("#recent tbody tr").first
    expect(latest).to_contain_text("VOV1")
    expect(latest).to_contain_text("Ưu tiên")
    for device in ("loa-1", "loa-3"):
        expect(latest.locator(".ack", has_text=device)).to_have_count(1)
    cmd = probe.wait_for(lambda m: m.topic == "xaso/grp/thon-1/cmd").json()
    assert cmd["type"] == "broadcast.stream" and cmd["body"]["url"] == VOV1
    assert cmd["body"]["duration_s"] == 900 and cmd["body"]["fallback"]["duration_ms"] > 900
    asked: list[str] = []
    stop = page.locator("#stop")
    stop.locator("input[value='group:thon-1']").check()
    _answer(page, asked, True)
    stop.locator("button[type=submit]").click()
    expect(page.locator(".ok")).to_contain_text("Đã gửi lệnh")
    probe.wait_for(
        lambda m: m.topic == "xaso/grp/thon-1/cmd" and m.json()["type"] == "broadcast.stop"
    )

    # VOV news at 05:00 and 18:00 daily, 30 minutes, in the schedules and the calendar
    page.click("nav >> text=Lịch phát")
    entry = page.locator("#new-entry")
    entry.locator("input[value='group:thon-1']").check()
    entry.locator("select[name=station]").select_option(label="VOV1")
    entry.locator("input[name=minutes]").fill("0")
    entry.locator("input[name=from_day]").fill("06/01/2030")
    entry.locator("input[name=times]").fill("05:00 18:00")
    entry.locator("select[name=repeat]").select_option("daily")
    entry.locator("input[name=label]").fill("Thời sự VOV")
    entry.locator("button[type=submit] >> nth=0").click()
    expect(page.locator(".error")).to_contain_text("số phút, từ 1 đến 1440")
    entry = page.locator("#new-entry")
    entry.locator("input[name=minutes]").fill("30")
    entry.locator("button[type=submit] >> nth=0").click()
    expect(page.locator(".ok")).to_have_text("Đã lưu và gửi lịch phát.")
    expect(page.locator("#entries tbody tr").first).to_contain_text("Tiếp sóng VOV1 (30 phút)")
    page.goto(page.url.split("?")[0] + "?day=2030-01-06")
    loa_1 = page.locator("#calendar table[data-device=loa-1]")
    expect(loa_1).to_contain_text("06/01/2030 05:00:00")
    expect(loa_1).to_contain_text("06/01/2030 18:00:00")
    expect(loa_1.locator("tr", has_text="Thời sự VOV")).to_have_count(2)

    # deleting asks first, and a station a schedule relays is kept, saying why
    page.click("nav >> text=Đài tiếp sóng")
    row = page.locator("#stations tbody tr", has_text="VOV1")
    _answer(page, asked, False)
    row.locator("form.inline button[type=submit]").click()
    assert asked[-1] == "Xoá đài «VOV1»?"
    expect(page.locator("#stations tbody tr", has_text="VOV1")).to_have_count(1)
    _answer(page, asked, True)
    row.locator("form.inline button[type=submit]").click()
    expect(page.locator(".error")).to_contain_text("đang có trong 1 lịch phát")
    expect(page.locator("#stations tbody tr", has_text="VOV1")).to_have_count(1)

    page.click("#lang-switch")  # after a form's answer: the home page, in English
    page.click("nav >> text=Relayed stations")
    expect(page.locator("#stations tbody tr", has_text="VOV1")).to_contain_text("Priority")
