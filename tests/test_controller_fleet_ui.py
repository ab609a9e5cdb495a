"""The fleet pages in headless Chromium: sign in, the devices on the dashboard, a device
page with its health chart, an alert, and adding a device from the browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright
from sqlalchemy import update

from controller.app import create_app
from controller.auth.accounts import create_user
from controller.db.fleet_tables import Device, DeviceState, TelemetrySample
from controller.settings import load_settings
from tests.conftest import Fleet
from tests.http_helpers import serve

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"


@pytest.fixture
def base_url(fleet: Fleet, tmp_path: Path) -> Iterator[str]:
    """The app with its services running on the fleet's site and broker; loa-1 has an hour
    of hot telemetry behind it, rolled up."""
    config = tmp_path / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{fleet.site.dir}"\n[mqtt]\nport = {fleet.broker.port}\n',
        encoding="utf-8",
    )
    app = create_app(load_settings(config))
    state = app.state.xaso
    now = state.now_ms()
    with state.sessions() as db:
        create_user(
            db, state.auth.passwords, username="ky-thuat", display_name="Lê Văn Kỹ",
            role="technician", password="mat-khau-ky-thuat", now_ms=now,
        )  # fmt: skip
        db.commit()
    state.fleet.sync_registry()
    with state.sessions.begin() as db:
        db.add_all(
            TelemetrySample(device_id="loa-1", ts_ms=t, received_ms=t, cpu_temp_c=70 + i % 15)
            for i, t in enumerate(range(now - 3600_000, now - 600_000, 60_000))
        )
        db.execute(update(Device).where(Device.id == "loa-1").values(last_seen_ms=now))
        db.execute(
            update(DeviceState)
            .where(DeviceState.device_id == "loa-1")
            .values(state="online", changed_ms=now, cpu_temp_c=82.0)
        )
    state.fleet.tick()  # roll-ups and alerts now, not at the service's first pass
    with serve(app) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


def test_dashboard_device_page_chart_alert_and_adding_a_device(
    base_url: str, browser: Browser
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base_url}/")
    page.fill("input[name=username]", "ky-thuat")
    page.fill("input[name=password]", "mat-khau-ky-thuat")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Bảng điều khiển")
    for device in ("loa-1", "loa-2", "loa-3", "kiosk-1"):
        expect(page.locator(f"#device-{device}")).to_be_visible()
    expect(page.locator("#device-loa-1 .badge").first).to_have_text("Trực tuyến")

    page.goto(f"{base_url}/alerts")
    expect(page.locator("#open-alerts")).to_contain_text(
        "Nhiệt độ loa-1 cao: 82 °C", timeout=40_000
    )
    expect(page.locator("#open-alerts")).to_contain_text("loa-1 temperature high: 82 °C")
    page.click("#open-alerts button:has-text('Đã biết')")
    expect(page.locator("#open-alerts")).to_contain_text("ky-thuat đã biết lúc")

    page.goto(f"{base_url}/devices/loa-1")
    expect(page.locator("#health-charts svg.chart polyline.avg")).to_have_count(1)
    expect(page.locator("#health-charts figcaption")).to_have_text("Nhiệt độ CPU (°C)")

    page.goto(f"{base_url}/devices/new")
    form = page.locator("#add-device")
    form.locator("input[name=id]").fill("loa-7")
    form.locator("input[name=groups]").fill("thon-7 all")
    form.locator("button[type=submit]").click()
    expect(page.locator("h1")).to_have_text("Đã thêm thiết bị loa-7.")
    expect(page.locator("#agent-config")).to_contain_text('username = "loa-7"')
    with page.expect_download() as download:
        page.click("#download-config")
    assert download.value.suggested_filename == "loa-7.toml"
    page.goto(f"{base_url}/?group=thon-7")
    expect(page.locator("#devices tbody tr")).to_have_count(1)
    assert not [e for e in errors if "Content Security Policy" in e], errors
