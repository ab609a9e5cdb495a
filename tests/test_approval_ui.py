"""Approval before air in headless Chromium: an administrator turns it on, a broadcaster
prepares an entry, a leader finds it under "Chờ duyệt" and approves it. The app runs
under uvicorn with its station on a real Mosquitto; every page read is Vietnamese,
with no code words (tests/page_text.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from controller.auth.accounts import create_user
from controller.site.directory import Site
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import PASSWORD, make_app, wait_connected
from tests.http_helpers import serve
from tests.page_text import plain_vietnamese

USERS = {"quan": "admin", "lan": "broadcaster", "hung": "leader"}


@pytest.fixture
def base_url(tmp_path: Path, site: Site, broker: Any) -> Iterator[str]:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'controller.db'}", site, broker.port)
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
        db.commit()
    tone = tone_file(tmp_path / "sang.wav", 440, 1.0)
    state.station.library.upload(tone, title="Bản tin sáng", created_by="lan")
    with serve(app) as url:
        wait_connected(state)
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def sign_in(browser: Browser, base_url: str, username: str) -> Page:
    page = browser.new_context().new_page()  # a context each: its own cookies
    page.goto(f"{base_url}/approvals")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Chờ duyệt")
    return page


def test_a_broadcaster_prepares_a_leader_approves_in_vietnamese(
    browser: Browser, base_url: str
) -> None:
    admin = sign_in(browser, base_url, "quan")
    expect(admin.locator("#approval-rule")).to_contain_text("chưa bật duyệt")
    admin.click("#approval-setting button")
    expect(admin.locator(".ok")).to_have_text("Đã lưu cài đặt duyệt.")
    expect(admin.locator("#approval-rule")).to_contain_text(
        "chỉ tới cụm loa sau khi lãnh đạo duyệt"
    )
    plain_vietnamese(admin)

    lan = sign_in(browser, base_url, "lan")
    lan.click("nav >> text=Lịch phát")
    form = lan.locator("#new-entry")
    form.locator("input[value='group:thon-1']").check()
    form.locator("select[name=clip]").select_option(label="Bản tin sáng (1.0 s)")
    form.locator("input[name=from_day]").fill("06/01/2030")
    form.locator("input[name=times]").fill("06:30")
    form.locator("select[name=repeat]").select_option("weekdays")
    form.locator("input[name=label]").fill("Thông báo tiêm chủng")
    lan.click("#new-entry button[type=submit] >> nth=0")
    expect(lan.locator(".ok")).to_contain_text("đang chờ lãnh đạo duyệt")
    row = lan.locator("#entries tbody tr", has_text="Thông báo tiêm chủng")
    expect(row.locator(".approval")).to_have_text("Chờ duyệt")

    hung = sign_in(browser, base_url, "hung")
    waiting = hung.locator("#pending tbody tr", has_text="Thông báo tiêm chủng")
    expect(waiting).to_have_count(1)
    expect(waiting).to_contain_text("Lịch phát")
    expect(waiting).to_contain_text("Nhóm thon-1")
    expect(waiting).to_contain_text("lan")
    assert re.search(r"\b\d{2}/\d{2}/\d{4} \d{2}:\d{2}\b", waiting.inner_text())
    plain_vietnamese(hung)
    waiting.locator("button", has_text="Duyệt, cho phát").click()
    expect(hung.locator(".ok")).to_have_text("Đã duyệt: nội dung đã được gửi tới cụm loa.")
    expect(hung.locator("#pending")).to_contain_text("Không có việc nào chờ duyệt.")
    decided = hung.locator("#decided tbody tr", has_text="Thông báo tiêm chủng")
    expect(decided).to_contain_text("Đã duyệt")
    expect(decided).to_contain_text("hung")
    plain_vietnamese(hung)

    lan.reload()
    expect(row.locator(".approval")).to_have_count(0)  # on air now
    lan.click("nav >> text=Chờ duyệt")
    expect(lan.locator("#mine tbody tr", has_text="Thông báo tiêm chủng")).to_contain_text(
        "Đã duyệt"
    )
    expect(lan.locator("#pending button")).to_have_count(0)  # a broadcaster cannot decide
