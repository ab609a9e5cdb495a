"""Issue 15's booking walk in a real headless Chromium: a citizen books on the controller's
public page, types the code at the kiosk's touchscreen, gets a number, follows it on a
phone (a second browser context, mobile viewport) at the controller's address, and is
called at the booked time, ahead of a walk-in who came earlier.

A real Mosquitto carries the signed retained ``bookings.set`` from the controller to the
kiosk and the kiosk's ``ticket.*`` events back to the controller's ingest. The kiosk runs
in this process on a clock the test moves, with the controller's (both at Monday
23/11/2026 09:00 in Hà Nội): what its agent does with them (verify the document, publish
the events) is done here with the same protocol functions.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from controller.site.directory import Site
from kiosk.escpos_read import qr_data
from kiosk.role import serve_pages
from kiosk.service import Kiosk
from kiosk.virtual_printer import VirtualPrinter
from protocol.envelope import open_envelope
from protocol.events import Body
from protocol.signing import Keyring
from protocol.uplink import Event
from tests.auth_helpers import Clock
from tests.booking_helpers import MONDAY_9_S, booking_app
from tests.controller_process import until
from tests.http_helpers import serve
from tests.kiosk_helpers import OFFICERS
from tests.mqtt_helpers import Clients, Collector, publish
from tests.test_kiosk_browser import signed_in, wait_serving

WAIT_MS = 20_000
PUBLIC = "https://tanphu.xaso.vn"
MIN_S = 60.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.now = MONDAY_9_S
    return c


@pytest.fixture
def controller(tmp_path: Path, site: Site, broker: Any, clock: Clock) -> Iterator[tuple[Any, str]]:
    db = f"sqlite:///{tmp_path / 'controller.db'}"
    app = booking_app(tmp_path, db, site_dir=site.dir, mqtt_port=broker.port, clock=clock)
    with serve(app) as url:
        until("the controller is connected", lambda: app.state.xaso.station.connected)
        yield app, url
    app.state.xaso.engine.dispose()


def kiosk_login(site: Site) -> tuple[str, str]:
    mqtt = tomllib.loads(site.device_config_path("kiosk-1").read_text())["mqtt"]
    return mqtt["username"], mqtt["password"]


def test_book_on_the_public_page_take_the_number_follow_it_on_a_phone_and_be_called_on_time(
    *,
    browser: Browser,
    site: Site,
    broker: Any,
    controller: tuple[Any, str],
    clock: Clock,
    make_kiosk: Callable[..., Kiosk],
    virtual_printer: VirtualPrinter,
) -> None:
    _app, url = controller
    clients = Clients(broker.host, broker.port)
    user, password = kiosk_login(site)
    uplink = clients.connect(user, password)
    bookings = Collector(clients.connect(user, password), "xaso/dev/kiosk-1/bookings")

    def emit(body: Body) -> None:  # the agent's outbox, in short
        event = Event(id=uuid.uuid4().hex, type=body.TYPE, ts=int(clock() * 1000), body=body.wire())
        publish(uplink, "xaso/dev/kiosk-1/event", msgspec.json.encode(event).decode())

    kiosk = make_kiosk(
        serve=serve_pages,
        officers=OFFICERS,
        clock=lambda: int(clock() * 1000),
        counters=1,
        controller_url=PUBLIC,
        device_id="kiosk-1",
        emit=emit,
    )
    base = f"http://127.0.0.1:{kiosk.cfg.web_port}"
    wait_serving(base)
    try:
        # two walk-ins take numbers at 09:00
        assert kiosk.issue("ho-tich")["number"] == "A001"
        assert kiosk.issue("ho-tich")["number"] == "A002"

        # a citizen books today 09:15 on the controller's public page, on a phone
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        citizen = phone.new_page()
        citizen.set_default_timeout(WAIT_MS)
        citizen.goto(f"{url}/dat-lich")
        citizen.get_by_role("link", name="Hộ tịch").click()
        expect(citizen.locator("h1")).to_have_text("Hộ tịch")
        citizen.locator("label.slot", has_text="09:15").locator("input").check()
        citizen.fill("input[name=phone]", "0912345678")
        citizen.get_by_role("button", name="Đặt lịch").click()
        expect(citizen.locator("#booking-code")).to_be_visible()
        code = citizen.locator("#booking-code").inner_text().strip()
        assert re.fullmatch(r"[A-Z2-9]{6}", code)
        expect(citizen.locator("#booking-when")).to_contain_text("09:15")

        # the signed document reaches the kiosk through the broker; the kiosk verifies it
        def has_code(m: Any) -> bool:
            return code in m.payload.decode()

        got = bookings.wait_for(has_code, timeout=60)
        opened = open_envelope(
            got.payload, Keyring.from_mapping(site.trusted_keys()), int(clock() * 1000)
        )
        kiosk.bookings.apply(got.topic, opened.body)

        # at 09:05 the citizen types the code at the touchscreen
        clock.now += 5 * MIN_S
        touch = browser.new_page()
        touch.set_default_timeout(WAIT_MS)
        touch.goto(f"{base}/kiosk")
        touch.fill("#booking-code", code.lower())
        touch.click("#booked")
        expect(touch.locator("#number")).to_have_text("A003")
        expect(touch.locator("#booked-mark")).to_contain_text("09:15")
        printed = virtual_printer.wait_tickets(3)
        qr = qr_data(printed[-1].items).decode()
        assert qr.startswith(f"{PUBLIC}/ve/kiosk-1/")

        # the QR code, opened on the phone (the test's controller stands for the public name)
        status = qr.replace(PUBLIC, url)
        citizen.goto(status)

        def shows(text: str) -> bool:
            citizen.goto(status)
            return text in citizen.locator("main").inner_text()

        until("the phone sees the ticket", lambda: shows("A003"))
        body = citizen.locator("main").inner_text()
        assert "Số người đang chờ trước: 2" in body and "Sắp đến lượt" in body
        wide = citizen.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, wide  # fits the phone's width

        # 09:10: the booked citizen is early, the counter calls the first walk-in
        officer = signed_in(browser, f"{base}/counter/1", "#next")
        clock.now += 5 * MIN_S
        officer.click("#next")
        expect(officer.locator("#current")).to_contain_text("A001")
        # 09:16: the slot has begun, the booked citizen goes before A002
        clock.now += 6 * MIN_S
        officer.click("#next")
        expect(officer.locator("#current")).to_contain_text("A003")
        until("the phone is told which counter", lambda: shows("Xin mời đến quầy số 1"))
        english = citizen.goto(status + "?lang=en")
        assert english is not None and english.status == 200
        expect(citizen.locator("main")).to_contain_text("Please go to counter 1")
    finally:
        clients.close_all()
