"""The controller's pages in headless Chromium: sign in, switch language, add a user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from controller.app import create_app
from controller.auth.accounts import create_user
from controller.settings import load_settings
from tests.http_helpers import serve

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "controller.toml"
    config.write_text(CHEAP, encoding="utf-8")
    app = create_app(load_settings(config))
    state = app.state.xaso
    with state.sessions() as db:
        create_user(
            db,
            state.auth.passwords,
            username="admin",
            display_name="Trần Văn Quản",
            role="admin",
            password="mat-khau-quan-tri",
            now_ms=state.now_ms(),
        )
        db.commit()
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


def test_sign_in_switch_language_and_add_a_user(base_url: str, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(f"{base_url}/users")  # not signed in: the sign-in page, in Vietnamese
    expect(page.locator("h1")).to_have_text("Đăng nhập")

    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "sai mat khau")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Sai tên đăng nhập hoặc mật khẩu.")
    expect(page.locator(".error")).to_contain_text("Wrong username or password.")

    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "mat-khau-quan-tri")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Người dùng")  # back where it was going
    expect(page.locator(".who")).to_contain_text("Trần Văn Quản · Quản trị")

    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("Users")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.goto(f"{base_url}/")  # the cookie remembers English
    expect(page.locator("h1")).to_have_text("Control panel")
    page.click("nav >> text=Users")

    form = page.locator("#create-user")
    form.locator("input[name=username]").fill("lan")
    form.locator("input[name=display_name]").fill("Nguyễn Thị Lan")
    form.locator("select[name=role]").select_option("broadcaster")
    form.locator("input[name=password]").fill("mot-mat-khau-dai")
    form.locator("button[type=submit]").click()
    expect(page.locator(".ok")).to_have_text("User lan added.")
    row = page.locator("tr[data-username=lan]")
    expect(row).to_contain_text("Nguyễn Thị Lan")
    expect(row.locator("select[name=role]")).to_have_value("broadcaster")

    # The same name again: refused on the page, in both languages.
    form = page.locator("#create-user")
    form.locator("input[name=username]").fill("lan")
    form.locator("input[name=password]").fill("mot-mat-khau-dai")
    form.locator("button[type=submit]").click()
    expect(page.locator(".error")).to_contain_text("The username lan is taken.")
    expect(page.locator(".error")).to_contain_text("Tên đăng nhập lan đã được dùng.")

    # Change her role, then deactivate her.
    page.goto(f"{base_url}/users")
    row = page.locator("tr[data-username=lan]")
    row.locator("select[name=role]").select_option("officer")
    row.locator("text=Change role").click()
    expect(page.locator(".ok")).to_have_text("lan updated.")
    page.locator("tr[data-username=lan]").locator("text=Deactivate").click()
    expect(page.locator("tr[data-username=lan]")).to_have_class("inactive")

    page.click("nav >> text=Audit log")
    expect(page.locator("#audit")).to_contain_text("User added")  # English: the page is in it
    expect(page.locator("#audit")).to_contain_text("user:lan")

    page.click("text=Sign out")
    expect(page.locator("h1")).to_have_text("Sign in")
