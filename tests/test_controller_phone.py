"""The broadcaster's pages on a phone: 390 px wide, no sideways scroll, the emergency first.

Headless Chromium as a phone (390 x 844 CSS pixels, touch), signed in as a
broadcaster, on pages with content in them: a clip, a schedule entry and a
broadcast. Every page fits the width of the screen (the document is no wider
than the viewport; a wide table scrolls inside itself), and the emergency
button, and the confirmation's own, are on the first screen without scrolling.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from controller.site.directory import Site
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import PASSWORD, Ctl, entry, group, make_app, wait_connected
from tests.http_helpers import serve

WIDTH, HEIGHT = 390, 844
WIDE = """() => Array.from(document.querySelectorAll("body *"))
  .filter(e => e.getBoundingClientRect().right > 390.5)
  .filter(e => { for (let a = e.parentElement; a; a = a.parentElement)
    if (getComputedStyle(a).overflowX !== "visible") return false; return true; })
  .slice(0, 8).map(e => e.tagName + "#" + e.id + "." + e.className + " " +
    Math.round(e.getBoundingClientRect().right))"""  # what sticks out, for a failure
PAGES = ("/broadcasts", "/schedules", "/clips", "/")


@pytest.fixture
def base_url(tmp_path: Path, site: Site, broker: Any) -> Iterator[str]:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'controller.db'}", site, broker.port)
    ctl = Ctl(app, tmp_path)
    state = app.state.xaso
    with serve(app) as url:
        wait_connected(state)
        api = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {ctl.tokens['broadcaster']}"},
            timeout=60,
        )
        wav = tone_file(tmp_path / "t.wav", 440, 1.0)
        with wav.open("rb") as f:
            made = api.post(
                "/api/clips", files={"file": ("t.wav", f)},
                data={"title": "Thông báo lịch tiêm chủng mở rộng cho trẻ em dưới năm tuổi"},
            )  # fmt: skip
        sha = made.json()["sha256"]
        assert api.post("/api/schedules", json=entry(sha)).status_code == 201
        played = api.post(
            "/api/broadcasts",
            json={"targets": group("all"), "clip_sha256": sha, "label": "Bản tin trưa nay"},
        )
        assert played.status_code == 201, played.text
        yield url


@pytest.fixture
def phone(base_url: str) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(
            viewport={"width": WIDTH, "height": HEIGHT},
            device_scale_factor=3,
            is_mobile=True,
            has_touch=True,
        )
        page = context.new_page()
        page.goto(f"{base_url}/login")
        page.fill("input[name=username]", "broadcaster")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_be_visible()
        yield page
        browser.close()


def widest(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def above_the_fold(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()  # relative to the viewport, unscrolled
    assert box is not None, selector
    return box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT


def test_the_broadcasters_pages_fit_a_phone_and_the_emergency_comes_first(
    phone: Page, base_url: str
) -> None:
    for path in PAGES:
        phone.goto(f"{base_url}{path}")
        expect(phone.locator("h1")).to_be_visible()
        assert widest(phone) <= WIDTH, (path, widest(phone), phone.evaluate(WIDE))
    phone.goto(f"{base_url}/broadcasts")
    expect(phone.locator("#recent tbody tr").first).to_contain_text("Bản tin trưa nay")
    assert phone.evaluate("window.scrollY") == 0
    emergency = "#emergency button[type=submit]"
    assert above_the_fold(phone, emergency)

    # the confirmation's own button is on its first screen too
    phone.locator("#emergency input[value='group:all']").check()
    phone.locator("#emergency select[name=clip]").select_option(index=1)
    phone.click(emergency)
    expect(phone.locator("h1")).to_have_text("Xác nhận phát khẩn cấp")
    assert widest(phone) <= WIDTH
    assert above_the_fold(phone, "#confirm-send")
