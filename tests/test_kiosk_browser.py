"""The kiosk's pages in a real headless Chromium: press a service, call next, the TV updates."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from kiosk.numbering import local_day
from kiosk.role import serve_pages
from kiosk.service import Kiosk
from kiosk.virtual_printer import VirtualPrinter

WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture
def served(make_kiosk: Callable[..., Kiosk]) -> tuple[Kiosk, str]:
    """A kiosk with its real web server (uvicorn in its thread) on a free port."""
    kiosk = make_kiosk(serve=serve_pages)
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


def new_page(browser: Browser) -> Page:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    return page


def test_press_a_service_call_next_and_the_display_follows(
    browser: Browser, served: tuple[Kiosk, str], virtual_printer: VirtualPrinter
) -> None:
    kiosk, base = served
    display, counter, touch = new_page(browser), new_page(browser), new_page(browser)
    display.goto(f"{base}/display")
    counter.goto(f"{base}/counter/2")
    touch.goto(f"{base}/kiosk")

    touch.click("button.service[data-code='ho-tich']")
    expect(touch.locator("#number")).to_have_text("A001")
    expect(touch.locator("#ahead")).to_have_text("0")
    virtual_printer.wait_tickets(1)
    expect(counter.locator("#waiting td[data-code='ho-tich']")).to_have_text("1")  # live

    counter.click("#next")
    expect(counter.locator("#current")).to_have_text("A001")
    # the TV was opened before anything happened: it changed by itself
    expect(display.locator("#counter-2 .number")).to_have_text("A001")
    expect(display.locator("#latest")).to_contain_text("A001")
    expect(display.locator("#latest")).to_contain_text("2")

    counter.click("#recall")
    expect(counter.locator("#msg")).to_contain_text("A001")
    counter.click("#served")
    expect(display.locator("#counter-2 .number")).to_have_text("—")
    counter.click("#next")
    expect(counter.locator("#msg")).to_have_text("Không còn ai đang chờ")
    counter.click("#pause")
    expect(display.locator("#counter-2 .number")).to_contain_text("tạm dừng")
    counter.click("#next")
    expect(counter.locator("#msg")).to_contain_text("tạm dừng")

    rate = new_page(browser)
    rate.goto(f"{base}/rate/2?lang=en")
    rate.click("button.rating[data-level='5']")
    expect(rate.locator("#msg")).to_have_text("Thank you for your rating")
    assert kiosk.store.tickets(local_day(kiosk.now_ms(), kiosk.cfg.tz))[0].rating == 5


def test_out_of_paper_on_the_touchscreen(
    browser: Browser, served: tuple[Kiosk, str], virtual_printer: VirtualPrinter
) -> None:
    _kiosk, base = served
    touch = new_page(browser)
    touch.goto(f"{base}/kiosk")
    expect(touch.locator("#paper")).to_be_hidden()
    virtual_printer.paper = "out"
    expect(touch.locator("#paper")).to_contain_text("Hết giấy / Out of paper")
    touch.click("button.service[data-code='dat-dai']")
    expect(touch.locator("#number")).to_have_text("B001")
    expect(touch.locator("#kept")).to_contain_text("B001")
    expect(touch.locator("#paper")).to_contain_text("B001")
    virtual_printer.paper = "ok"
    expect(touch.locator("#paper")).to_be_hidden()
    assert b"B001" in b"".join(
        it.data for it in virtual_printer.wait_tickets(1)[0].items if hasattr(it, "data")
    )


def test_bad_input_on_the_pages(browser: Browser, served: tuple[Kiosk, str]) -> None:
    _kiosk, base = served
    page = new_page(browser)
    response: Any = page.goto(f"{base}/counter/7")
    assert response.status == 422
    expect(page.locator("#error")).to_contain_text("Không có quầy số 7")
    expect(page.locator("#error")).to_contain_text("There is no counter 7")
    page.goto(f"{base}/kiosk")
    # a service the kiosk does not have, as a tampered page would send it
    page.evaluate("document.querySelector('button.service').dataset.code = 'khong-co'")
    page.click("button.service")
    expect(page.locator("#error")).to_contain_text("Không có dịch vụ")
