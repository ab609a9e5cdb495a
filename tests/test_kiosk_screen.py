"""The touchscreen in a real headless Chromium: every citizen starts from a clean screen.

Citizens in a row: the first switches to English and asks for a priority
ticket; the next one gets a normal ticket, and the screen is back in
Vietnamese with nothing of the first left on it. Refusals say when to come
back and hide the last number; a physical button pressed out of hours shows
on the screen; an unplugged printer is "not answering", not "printing".
Timers run on Playwright's fake clock, so no test waits 20 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from gpiozero.pins.mock import MockFactory
from playwright.sync_api import Browser, Page, expect

from kiosk.numbering import local_day
from kiosk.role import serve_pages
from kiosk.service import Kiosk
from kiosk.virtual_printer import VirtualPrinter
from tests.test_kiosk_browser import browser, new_page, served  # noqa: F401 - fixtures
from tests.test_kiosk_role import until

HOUR_MS = 3_600_000


def kiosk_page(browser: Browser, base: str) -> Page:  # noqa: F811 - the imported fixture's value
    page = new_page(browser)
    page.clock.install()  # setTimeout under the test's hand
    page.goto(f"{base}/kiosk")
    return page


def tickets(kiosk: Kiosk) -> list[tuple[str, bool]]:
    day = local_day(kiosk.now_ms(), kiosk.cfg.tz)
    return [(t.number, t.priority) for t in kiosk.store.tickets(day)]


def test_two_citizens_in_a_row_each_start_clean(
    browser: Browser,  # noqa: F811
    served: tuple[Kiosk, str],  # noqa: F811
    virtual_printer: VirtualPrinter,
) -> None:
    kiosk, base = served
    page = kiosk_page(browser, base)
    # the first citizen reads English and is elderly
    page.click("#lang")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.click("#priority")
    expect(page.locator("#priority")).to_have_attribute("aria-pressed", "true")
    page.click("button.service[data-code='ho-tich']")
    expect(page.locator("#number")).to_have_text("A001")
    expect(page.locator("#prio-mark")).to_be_visible()
    expect(page.locator("#result")).to_contain_text("People ahead")
    # the toggle is off at once: whoever presses next gets a normal ticket
    expect(page.locator("#priority")).to_have_attribute("aria-pressed", "false")

    # the second citizen, right behind
    page.click("button.service[data-code='dat-dai']")
    expect(page.locator("#number")).to_have_text("B001")
    expect(page.locator("#prio-mark")).to_be_hidden()
    assert sorted(tickets(kiosk)) == [("A001", True), ("B001", False)]
    virtual_printer.wait_tickets(2)

    page.clock.run_for(11_000)  # the result's time on screen is over
    expect(page.locator("html")).to_have_attribute("lang", "vi")
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("h1")).to_have_text("Mời chọn dịch vụ để lấy số")
    expect(page.locator("#priority")).to_have_attribute("aria-pressed", "false")

    # a third citizen: Vietnamese, normal, and the language is not kept by a cookie
    page.click("button.service[data-code='ho-tich']")
    expect(page.locator("#number")).to_have_text("A002")
    expect(page.locator("#result")).to_contain_text("Số người đang chờ trước")
    assert ("A002", False) in tickets(kiosk)
    other = new_page(browser)
    other.goto(f"{base}/kiosk")  # the same browser context: the cookie says vi again
    expect(other.locator("html")).to_have_attribute("lang", "vi")


def test_a_walk_away_resets_after_20_s_idle(
    browser: Browser,  # noqa: F811
    served: tuple[Kiosk, str],  # noqa: F811
) -> None:
    kiosk, base = served
    page = kiosk_page(browser, base)
    page.click("#lang")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.click("#priority")  # then walks away without a ticket
    page.clock.run_for(15_000)
    expect(page.locator("html")).to_have_attribute("lang", "en")  # not yet
    page.clock.run_for(6_000)
    expect(page.locator("html")).to_have_attribute("lang", "vi")
    expect(page.locator("#priority")).to_have_attribute("aria-pressed", "false")
    page.click("button.service[data-code='ho-tich']")
    expect(page.locator("#number")).to_have_text("A001")
    assert tickets(kiosk) == [("A001", False)]


def test_a_refusal_says_when_to_come_back_and_hides_the_last_number(
    browser: Browser,  # noqa: F811
    served: tuple[Kiosk, str],  # noqa: F811
) -> None:
    kiosk, base = served
    page = kiosk_page(browser, base)
    page.click("button.service[data-code='ho-tich']")
    expect(page.locator("#number")).to_have_text("A001")
    kiosk.now_ms.ms += 3 * HOUR_MS  # type: ignore[attr-defined]  # 12:00: the lunch break
    page.click("button.service[data-code='ho-tich']")
    error = page.locator("#error")
    expect(error).to_contain_text("Ngoài giờ tiếp nhận")
    expect(error).to_contain_text("Xin mời quay lại trong giờ tiếp nhận: 07:00–11:15, 13:15–16:30")
    expect(error).to_contain_text("thứ Hai đến thứ Sáu")
    expect(page.locator("#result")).to_be_hidden()  # not A001 beside the refusal
    page.clock.run_for(11_000)
    expect(error).to_be_hidden()


@pytest.fixture
def served_with_button(
    make_kiosk: Callable[..., Kiosk],
) -> Iterator[tuple[Kiosk, str, MockFactory]]:
    pins = MockFactory()  # a fresh factory per test (PITFALLS: MockFactory keeps pin state)
    kiosk = make_kiosk(
        serve=serve_pages, pin_factory=pins, buttons=[{"service": "ho-tich", "pin": 5}]
    )
    base = f"http://127.0.0.1:{kiosk.cfg.web_port}"
    until(lambda: kiosk.web is not None and kiosk.web.started)  # type: ignore[attr-defined]
    yield kiosk, base, pins
    pins.reset()


def test_a_button_pressed_out_of_hours_shows_on_the_screen(
    browser: Browser,  # noqa: F811
    served_with_button: tuple[Kiosk, str, MockFactory],
) -> None:
    kiosk, base, pins = served_with_button
    page = kiosk_page(browser, base)
    kiosk.now_ms.ms += 9 * HOUR_MS  # type: ignore[attr-defined]  # 18:00
    pins.pin(5).drive_low()
    pins.pin(5).drive_high()
    error = page.locator("#error")
    expect(error).to_contain_text("Ngoài giờ tiếp nhận")
    expect(error).to_contain_text("07:00–11:15, 13:15–16:30")
    assert tickets(kiosk) == []
    other = new_page(browser)
    other.goto(f"{base}/kiosk")  # a page opened later does not show an old refusal
    expect(other.locator("h1")).to_be_visible()
    expect(other.locator("#error")).to_be_hidden()


def test_an_unplugged_printer_is_not_answering_on_the_screen(
    browser: Browser,  # noqa: F811
    served: tuple[Kiosk, str],  # noqa: F811
    virtual_printer: VirtualPrinter,
) -> None:
    kiosk, base = served
    page = kiosk_page(browser, base)
    until(lambda: kiosk.printer_view()["state"] == "ready")
    expect(page.locator("#paper")).to_be_hidden()
    virtual_printer.answer = "silent"
    expect(page.locator("#paper")).to_contain_text("Máy in không trả lời / Printer not answering")
    page.click("button.service[data-code='ho-tich']")
    expect(page.locator("#number")).to_have_text("A001")
    expect(page.locator("#kept")).to_contain_text("Máy in chưa in được: số A001 đã được giữ")
    expect(page.locator("#paper")).to_contain_text("A001")
    virtual_printer.cover_open, virtual_printer.answer = True, "status"
    expect(page.locator("#paper")).to_contain_text("Nắp máy in đang mở")  # not "Hết giấy"
    virtual_printer.cover_open = False
    expect(page.locator("#paper")).to_be_hidden()
    virtual_printer.wait_tickets(1)
