"""Issue 15: the hall TV read from 10 m on a 43-inch TV at 1080p, in a real Chromium.

Each counter's number at least 12 % of the screen's height and the latest call
larger, a 24-hour clock in the office's zone with the date as dd/mm/yyyy, the
office hours, the notice line; under the strict CSP, and still live.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from kiosk.numbering import Service
from kiosk.role import serve_pages
from kiosk.screen import hall_hours
from kiosk.service import Kiosk
from kiosk.web import STRICT_CSP
from tests.kiosk_helpers import OFFICER, OFFICERS

WAIT_MS = 15_000
HEIGHT = 1080
NOTICE = "Chiều thứ Sáu 27/11 bộ phận một cửa nghỉ họp, xin quý khách đến buổi sáng."
MEASURE = """() => [...document.querySelectorAll('.counter .number, #latest-number')].map(
  (e) => ({id: e.id || e.closest('.counter').id, text: e.textContent,
           height: e.getBoundingClientRect().height, bottom: e.getBoundingClientRect().bottom}))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


def serve(make_kiosk: Callable[..., Kiosk], **settings: Any) -> tuple[Kiosk, str]:
    kiosk = make_kiosk(serve=serve_pages, officers=OFFICERS, **settings)
    base = f"http://127.0.0.1:{kiosk.cfg.web_port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/state", timeout=2).close()
            return kiosk, base
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def tv(browser: Browser, url: str, blocked: list[str]) -> Page:
    """A 1920x1080 screen that records every script or style the CSP refused."""
    page = browser.new_page(viewport={"width": 1920, "height": HEIGHT})
    page.set_default_timeout(WAIT_MS)
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    response = page.goto(url)
    assert response is not None and response.headers["content-security-policy"] == STRICT_CSP
    return page


def test_the_hall_numbers_are_read_from_ten_metres_and_follow_the_calls(
    browser: Browser, make_kiosk: Callable[..., Kiosk]
) -> None:
    kiosk, base = serve(make_kiosk, hall_notice=NOTICE)
    blocked: list[str] = []
    page = tv(browser, f"{base}/display", blocked)
    expect(page.locator("#clock-time")).to_have_text("09:00")  # the kiosk's clock, in Hà Nội
    expect(page.locator("#clock-date")).to_have_text("Thứ Hai, 23/11/2026")
    expect(page.locator("#hours")).to_have_text(
        "Giờ tiếp nhận hồ sơ: 07:00–11:15, 13:15–16:30, thứ Hai đến thứ Sáu"
    )
    expect(page.locator("#notice")).to_have_text(NOTICE)
    expect(page.locator("#notice")).to_be_visible()

    kiosk.issue("ho-tich")
    kiosk.counter(2, "next", officer=OFFICER["id"])
    # opened before the call: the script (a file, under the CSP) followed it live
    expect(page.locator("#counter-2 .number")).to_have_text("A001")
    expect(page.locator("#latest-number")).to_have_text("A001")
    expect(page.locator("#latest-counter-number")).to_have_text("2")

    sizes = page.evaluate(MEASURE)
    assert [s["id"] for s in sizes] == ["latest-number", "counter-1", "counter-2", "counter-3"]
    latest, counters = sizes[0], sizes[1:]
    for size in sizes:
        assert size["height"] >= 0.12 * HEIGHT, size
        assert size["bottom"] <= HEIGHT, size  # on the screen, not scrolled off
    assert all(latest["height"] > c["height"] for c in counters), sizes
    assert page.evaluate("document.documentElement.scrollHeight") <= HEIGHT
    expect(page.locator("#calls-caption")).to_be_hidden()  # no earlier call yet
    kiosk.issue("dat-dai")
    kiosk.counter(1, "next", officer=OFFICER["id"])
    expect(page.locator("#latest-number")).to_have_text("B001")
    expect(page.locator("#latest-counter-number")).to_have_text("1")
    expect(page.locator("#calls li")).to_have_text(["A001 → quầy 2"])
    expect(page.locator("#calls-caption")).to_be_visible()
    kiosk.counter(2, "pause", officer=OFFICER["id"])
    expect(page.locator("#counter-2 .paused")).to_be_visible()
    assert blocked == []


def test_in_english_with_no_notice_and_services_of_their_own_hours(
    browser: Browser, make_kiosk: Callable[..., Kiosk]
) -> None:
    services = [
        {"code": "ho-tich", "name_vi": "Hộ tịch", "name_en": "Civil status", "prefix": "A"},
        {
            "code": "dat-dai",
            "name_vi": "Đất đai",
            "name_en": "Land",
            "prefix": "B",
            "hours": [["07:30", "11:00"]],
            "weekdays": [0, 2, 4],
        },
    ]
    _kiosk, base = serve(make_kiosk, services=services)
    blocked: list[str] = []
    page = tv(browser, f"{base}/display?lang=en", blocked)
    expect(page.locator("#clock-date")).to_have_text("Monday, 23/11/2026")
    expect(page.locator("#hours .hours-line")).to_have_text(
        [
            "Civil status: 07:00–11:15, 13:15–16:30, Monday to Friday",
            "Land: 07:30–11:00, Monday, Wednesday, Friday",
        ]
    )
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#latest-number")).to_have_text("—")
    assert blocked == []


def test_the_hours_are_one_line_when_every_service_keeps_the_same() -> None:
    same = [
        Service(code="ho-tich", name_vi="Hộ tịch", name_en="Civil status", prefix="A"),
        Service(code="dat-dai", name_vi="Đất đai", name_en="Land", prefix="B"),
    ]
    assert hall_hours(same) == [
        (
            "Giờ tiếp nhận hồ sơ: 07:00–11:15, 13:15–16:30, thứ Hai đến thứ Sáu",
            "Service hours: 07:00–11:15, 13:15–16:30, Monday to Friday",
        )
    ]


@pytest.mark.parametrize(
    "path", ["/static/nope.js", "/static/../web.py", "/static/%2e%2e/config.py", "/static/"]
)
def test_the_static_files_serve_nothing_else(make_kiosk: Callable[..., Kiosk], path: str) -> None:
    _kiosk, base = serve(make_kiosk)
    with urllib.request.urlopen(f"{base}/static/display.js", timeout=5) as ok:
        assert b"EventSource" in ok.read()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}{path}", timeout=5)
    assert refused.value.code == 404
    assert json.loads(refused.value.read())["vi"] == "Không tìm thấy trang"
