"""The console and the live pages in headless Chromium, against real agents.

The app under uvicorn with its services running (station on a real
Mosquitto, the live feed), two speaker agents in their own processes. A
technician sets a speaker's volume from its page, plays a test tone for a
village from the console and restarts the agent: each answer shows on the
page as it arrives. An administrator's broadcasts page shows the tone on air
with its level, and a stop's acks arriving; the dashboard shows an agent
killed with SIGKILL go offline, without a reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from controller.site.directory import Site
from tests.broadcast_api_helpers import PASSWORD, Ctl, make_app, wait_connected
from tests.http_helpers import serve

WAIT_MS = 90_000  # a shared, busy machine: generous, the outcome is what is asserted


@pytest.fixture
def base_url(tmp_path: Path, site: Site, broker: Any) -> Iterator[str]:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'controller.db'}", site, broker.port)
    Ctl(app, tmp_path)  # a user per role, named by the role
    state = app.state.xaso
    state.fleet.sync_registry()
    with serve(app) as url:
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
    page = browser.new_context().new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{base_url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()
    return page


def test_console_commands_acks_on_air_and_offline_show_live(
    base_url: str, browser: Browser, fleet: Any, probe: Any, tmp_path: Path
) -> None:
    played = tmp_path / "played"
    loa_1 = fleet.spawn("loa-1", sections={"speaker": {"sink": "wav", "wav_dir": str(played)}})
    loa_2 = fleet.spawn("loa-2", keepalive_s=5)
    probe.status_is("loa-1", "online", timeout=60)
    probe.status_is("loa-2", "online", timeout=60)
    tech = signed_in(browser, base_url, "technician")
    admin = signed_in(browser, base_url, "admin")

    # the volume, from the speaker's own page: its answer shows in its table
    tech.goto(f"{base_url}/devices/loa-1")
    expect(tech.locator("#device-state")).to_have_text("Trực tuyến")
    tech.fill("#volume-form input[name=volume_pct]", "40")
    tech.click("#volume-form button[type=submit]")
    expect(tech.locator(".ok")).to_contain_text("Đã gửi lệnh")
    first = tech.locator("#commands tbody tr").first
    expect(first).to_contain_text("Âm lượng")
    expect(first.locator(".acks")).to_have_text("loa-1: Đã nhận")
    expect(first.locator(".status")).to_have_text("Đã nhận đủ")

    # a test tone for thôn 1 from the console, watched on the broadcasts page
    admin.goto(f"{base_url}/broadcasts")
    expect(admin.locator("#on-air-none")).to_be_visible()
    tech.click("nav >> text=Điều khiển")
    tone = tech.locator("#tone-form")
    tone.locator("input[value='group:thon-1']").check()
    tone.locator("input[name=frequency_hz]").fill("660")
    tone.locator("input[name=duration_s]").fill("6")
    tone.locator("button[type=submit]").click()
    row = tech.locator("#commands tbody tr").first
    expect(row).to_contain_text("Âm thử")
    expect(row.locator(".ack[data-device=loa-1]")).to_have_text("loa-1: Đã nhận")
    expect(row.locator(".ack[data-device=loa-3]")).to_have_text("loa-3: Đang chờ trả lời")
    on_air = admin.locator("#on-air li[data-device=loa-1]")
    expect(on_air).to_contain_text("Thông thường")
    expect(on_air).to_contain_text("test tone 660 Hz")
    expect(admin.locator("#on-air-none")).to_be_hidden()
    expect(on_air).to_have_count(0)  # it ends: gone from the list, without a reload
    expect(admin.locator("#on-air-none")).to_be_visible()

    # a stop from the broadcasts page: its row's ack arrives live
    admin.locator("#stop input[value='device:loa-1']").check()
    admin.once("dialog", lambda dialog: dialog.accept())  # a stop asks first
    admin.click("#stop button[type=submit]")
    stop_row = admin.locator("#recent tbody tr").first
    expect(stop_row.locator(".acks")).to_have_text("loa-1 ✓")
    expect(stop_row.locator(".status")).to_have_text("Đã nhận đủ")

    # the dashboard: an agent killed goes offline on the open page
    admin.goto(f"{base_url}/")
    loa_2_row = admin.locator("#device-loa-2")
    expect(loa_2_row.locator("[data-role=state]")).to_have_text("Trực tuyến")
    online_before = int(admin.locator("[data-count=online]").inner_text())
    admin.evaluate("window.stillTheSamePage = true")
    loa_2.kill9()
    expect(loa_2_row.locator("[data-role=state]")).to_have_text("Mất kết nối")
    expect(loa_2_row).to_have_class("state-offline")
    expect(admin.locator("[data-count=online]")).to_have_text(str(online_before - 1))
    assert admin.evaluate("window.stillTheSamePage") is True  # no reload

    # the restart asks for a tick, then the agent answers and exits for systemd
    tech.goto(f"{base_url}/devices/loa-1")
    tech.click("#restart-form button[type=submit]")  # the browser refuses: not ticked
    assert tech.url.endswith("/devices/loa-1")
    tech.check("#restart-form input[name=confirm]")
    tech.click("#restart-form button[type=submit]")
    first = tech.locator("#commands tbody tr").first
    expect(first).to_contain_text("Khởi động lại")
    expect(first.locator(".acks")).to_have_text("loa-1: Đã nhận")
    assert loa_1.proc.wait(30) == 75
    expect(tech.locator("#device-state")).to_have_text("Mất kết nối")
