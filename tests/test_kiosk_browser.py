"""The kiosk's pages in a real headless Chromium: press a service, an officer signs in and
calls, the TV and the counter's own screen follow, the rating device rates once."""

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
from tests.kiosk_helpers import OFFICERS, PIN

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
    kiosk = make_kiosk(serve=serve_pages, officers=OFFICERS)
    base = f"http://127.0.0.1:{kiosk.cfg.web_port}"
    wait_serving(base)
    return kiosk, base


def wait_serving(base: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/state", timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def new_page(browser: Browser) -> Page:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    return page


def signed_in(browser: Browser, url: str, ready: str, pin: str = PIN) -> Page:
    """A page of its own (its own cookies) where the officer typed the PIN."""
    page = browser.new_context().new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    expect(page.locator("#signin-title")).to_be_visible()
    page.fill("#pin", pin)
    page.click("#signin-button")
    expect(page.locator(ready)).to_be_visible()
    return page


def test_press_a_service_call_next_and_the_display_follows(
    browser: Browser, served: tuple[Kiosk, str], virtual_printer: VirtualPrinter
) -> None:
    kiosk, base = served
    display, touch = new_page(browser), new_page(browser)
    display.goto(f"{base}/display")
    counter = signed_in(browser, f"{base}/counter/2", "#next")
    expect(counter.locator("#officer")).to_have_text("Nguyễn Văn An")
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
    expect(display.locator("#counter-2 .paused")).to_have_text("Tạm dừng")
    expect(display.locator("#counter-2 .number")).to_have_text("—")
    counter.click("#next")
    expect(counter.locator("#msg")).to_contain_text("tạm dừng")

    rate = signed_in(browser, f"{base}/rate/2?lang=en", "#rate-page")
    expect(rate.locator("#rate-number")).to_have_text("A001")
    rate.click("button.rating[data-level='5']")
    expect(rate.locator("#msg")).to_have_text("Thank you for your rating")
    expect(rate.locator("#rating")).to_be_hidden()  # reset: waits for the next service
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


def test_an_officer_calls_brings_back_calls_a_number_transfers_and_the_screen_follows(
    browser: Browser, make_kiosk: Callable[..., Kiosk]
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    kiosk = make_kiosk(events, serve=serve_pages, officers=OFFICERS)
    base = f"http://127.0.0.1:{kiosk.cfg.web_port}"
    wait_serving(base)
    assert [kiosk.issue("ho-tich")["number"] for _ in range(4)] == ["A001", "A002", "A003", "A004"]

    screen = new_page(browser)
    screen.goto(f"{base}/display/2")
    expect(screen.locator("#number")).to_have_text("—")

    # without a sign-in the counter page is a sign-in form, and its API refuses
    door = browser.new_context().new_page()
    door.set_default_timeout(WAIT_MS)
    door.goto(f"{base}/counter/2")
    status = door.evaluate("fetch('/api/counters/2/next', {method: 'POST'}).then(r => r.status)")
    assert status == 401 and kiosk.office.current(2, kiosk.now_ms()) is None
    door.fill("#pin", "1111")
    door.click("#signin-button")
    expect(door.locator("#msg")).to_contain_text("Sai cán bộ hoặc mã PIN")

    counter = signed_in(browser, f"{base}/counter/2", "#next")
    counter.click("#next")
    expect(screen.locator("#number")).to_have_text("A001")
    counter.click("#skip")  # A001 did not come
    expect(screen.locator("#number")).to_have_text("—")
    expect(counter.locator("button.bring-back[data-number='A001']")).to_be_visible()
    counter.click("#next")
    expect(screen.locator("#number")).to_have_text("A002")
    counter.click("button.bring-back[data-number='A001']")  # A001 came back
    expect(screen.locator("#number")).to_have_text("A001")
    expect(counter.locator("#current")).to_have_text("A001")
    expect(counter.locator("button.bring-back")).to_have_count(0)
    counter.fill("#number-input", "a004")
    counter.click("#call")
    expect(screen.locator("#number")).to_have_text("A004")
    counter.fill("#number-input", "A002")  # served already: refused, in Vietnamese
    counter.click("#call")
    expect(counter.locator("#msg")).to_contain_text("Không gọi được số A002")
    counter.select_option("#to", "dat-dai")
    counter.fill("#note", "Cần bổ sung bản sao sổ đỏ")
    counter.click("#transfer")
    expect(screen.locator("#number")).to_have_text("—")
    expect(counter.locator("#handover")).to_be_hidden()
    counter.fill("#number-input", "A004")  # taken over for Đất đai: the note comes along
    counter.click("#call")
    expect(screen.locator("#number")).to_have_text("A004")
    expect(counter.locator("#handover-note")).to_have_text("Cần bổ sung bản sao sổ đỏ")
    counter.click("#pause")
    expect(screen.locator("#paused")).to_be_visible()

    # the rating device rates the service just finished (A001, before A004 was called), once
    rate = signed_in(browser, f"{base}/rate/2", "#rate-page")
    expect(rate.locator("#rate-number")).to_have_text("A001")
    rate.evaluate(
        "() => { const b = document.querySelector(\"button.rating[data-level='4']\");"
        " b.click(); b.click(); }"
    )  # a double tap
    expect(rate.locator("#rating")).to_be_hidden()
    expect(rate.locator("#waiting-rate")).to_be_visible()
    a001 = kiosk.office.store.by_number(local_day(kiosk.now_ms(), kiosk.cfg.tz), "A001")
    assert a001 is not None
    again = rate.evaluate(
        "(id) => staffApi('/api/ratings', {counter: 2, level: 1, ticket_id: id})"
        ".then(() => 'accepted', (e) => e.vi)",
        a001.id,
    )
    assert "A001 đã được đánh giá rồi" in again
    assert kiosk.office.ticket(a001.id).rating == 4

    kinds = [(kind, body) for kind, body in events if kind.startswith(("ticket.", "counter."))]
    rated = [body for kind, body in kinds if kind == "ticket.rated"]
    assert [(r["number"], r["level"], r["officer"]) for r in rated] == [("A001", 4, "can-bo-an")]
    staff = [body for kind, body in kinds if kind != "ticket.issued"]
    assert staff and all(body.get("officer") == "can-bo-an" for body in staff)
    moved = next(body for kind, body in kinds if kind == "ticket.transferred")
    assert (moved["number"], moved["note"]) == ("A004", "Cần bổ sung bản sao sổ đỏ")
    a004 = kiosk.office.store.by_number(local_day(kiosk.now_ms(), kiosk.cfg.tz), "A004")
    assert a004 is not None and a004.queue == "dat-dai"
    assert [a.action for a in kiosk.store.actions(a001.id)] == [
        "called", "skipped", "brought_back", "called", "served", "rated",
    ]  # fmt: skip
