"""Issue 15 end to end: the ticket's QR code opens the controller's page, which follows
the queue from the kiosk's own events. A real Mosquitto, the kiosk agent and the
controller (`xaso controller`) each in its own process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.brokers.mosquitto import free_port
from kiosk.escpos_read import qr_data
from kiosk.virtual_printer import VirtualPrinter
from tests.conftest import Fleet
from tests.controller_process import broadcaster_controller, until
from tests.kiosk_helpers import OFFICERS, counter_headers
from tests.test_kiosk_broker import http, open_now, wait_http

PUBLIC = "https://tanphu.xaso.vn"
OFFICE = """
[booking]
[[booking.offices]]
kiosk = "kiosk-1"
name = "Bộ phận một cửa UBND xã Tân Phú"
[[booking.offices.services]]
code = "ho-tich"
name_vi = "Hộ tịch"
name_en = "Civil status"
"""


@pytest.fixture
def controller_url(tmp_path: Path, database_url: str, broker: Any) -> Iterator[str]:
    ctl, _password = broadcaster_controller(tmp_path, database_url, broker.port, OFFICE)
    try:
        yield ctl.url
    finally:
        ctl.stop()


def test_the_qr_code_opens_the_controllers_page_which_follows_the_queue(
    fleet: Fleet, controller_url: str, virtual_printer: VirtualPrinter
) -> None:
    port = free_port()
    kiosk = {
        "printer_url": virtual_printer.path,
        "status_poll_s": 0.2,
        "voice": "off",
        "web_host": "127.0.0.1",
        "office_address": "192.168.1.10",  # the office network's address: not printed now
        "web_port": port,
        "controller_url": PUBLIC,
        "counters": 1,
        "officers": OFFICERS,
        **open_now(),
    }
    fleet.spawn("kiosk-1", sections={"kiosk": kiosk})
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/state")
    ids = []
    for _ in range(4):
        status, body = http(f"{base}/api/tickets", {"service": "ho-tich"})
        assert status == 201, body
        ids.append(json.loads(body)["ticket_id"])
    printed = virtual_printer.wait_tickets(4)
    qr = qr_data(printed[-1].items).decode()
    assert qr == f"{PUBLIC}/ve/kiosk-1/{ids[-1]}"
    page_url = controller_url + qr.removeprefix(PUBLIC)

    def page(lang: str = "vi") -> str:
        r = httpx.get(page_url, params={"lang": lang}, timeout=30)
        return r.text if r.status_code == 200 else ""

    # the events reach the controller through the broker and its ingest
    until("the controller's page shows the ticket", lambda: 'id="ahead">3<' in page())
    text = page()
    assert "Hộ tịch" in text and "khoảng 15 phút" in text and "ước tính sơ bộ" in text
    assert "Sắp đến lượt" not in text
    assert "Estimated wait: about 15 min" in page("en")

    officer = counter_headers(base, 1)

    def act(action: str) -> None:
        status, body = http(f"{base}/api/counters/1/{action}", {}, officer)
        assert status == 200, body

    act("next")
    act("served")
    act("next")  # A002 at the counter: one ahead of A004
    until("the page says the turn is near", lambda: "Sắp đến lượt" in page())
    assert 'id="ahead">1<' in page() and "Your turn is near" in page("en")
    act("served")
    act("next")
    act("served")
    act("next")
    until("the page calls the citizen", lambda: "Xin mời đến quầy số 1" in page())
    act("served")
    until("the page says it is done", lambda: "Đã phục vụ xong" in page())
    missing = httpx.get(f"{controller_url}/ve/kiosk-1/khong-co-ve", timeout=30)
    assert missing.status_code == 404 and "Không tìm thấy vé này" in missing.text
