"""The public booking pages and API (controller/web/routes/booking.py) on SQLite and PostgreSQL:
a citizen books, the limits hold, bad input is refused in Vietnamese first, and each office's
kiosk gets its bookings as a signed retained document through a real Mosquitto."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.site.devices import add_device
from controller.site.directory import Site
from tests.booking_helpers import booking_app
from tests.broadcast_api_helpers import refused
from tests.conftest import Fleet
from tests.controller_process import until

TUESDAY = "2026-11-24"
BOOK = {"kiosk": "kiosk-1", "service": "ho-tich", "day": TUESDAY, "slot": "07:15"}


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Any:
    app = booking_app(tmp_path, database_url)
    with TestClient(app) as c:
        yield c
    app.state.xaso.engine.dispose()


def book(client: TestClient, phone: str = "0912345678", **kw: Any) -> Any:
    return client.post("/api/public/bookings", json={**BOOK, "phone": phone, **kw})


def places(client: TestClient, day: str = TUESDAY, service: str = "ho-tich") -> dict[str, int]:
    r = client.get(f"/api/public/booking/kiosk-1/{service}", params={"day": day})
    assert r.status_code == 200, r.text
    return {s["label"]: s["left"] for s in r.json()["slots"]}


def test_a_citizen_books_on_the_pages_with_no_sign_in_and_gets_a_code_and_its_qr(client):
    home = client.get("/dat-lich", headers={"accept": "text/html"})
    assert home.status_code == 200
    assert "Bộ phận một cửa UBND xã Tân Lập" in home.text and "Hộ tịch" in home.text
    page = client.get("/dat-lich/kiosk-1/ho-tich", params={"day": TUESDAY})
    assert page.status_code == 200
    assert "Thứ Ba<br>24/11/2026" in page.text and "Thứ Hai<br>23/11/2026" in page.text
    assert "Thứ Bảy" not in page.text  # working days only
    assert 'value="07:15"' in page.text and "còn 2 chỗ" in page.text
    done = client.post(
        "/dat-lich",
        data={**BOOK, "phone": "091 234 5678"},
        headers={"accept": "text/html"},
    )
    assert done.status_code == 201, done.text
    code = re.search(r'id="booking-code">([2-9A-Z]{6})<', done.text)
    assert code is not None
    assert "<svg" in done.text  # the code as a QR, for the kiosk's scanner
    assert "07:15, Thứ Ba 24/11/2026" in done.text
    assert "Đã đặt lịch" in done.text and "0912345678" not in done.text
    assert places(client)["07:15"] == 1
    english = client.get("/dat-lich/kiosk-1/ho-tich", params={"day": TUESDAY, "lang": "en"})
    assert "Tuesday<br>24/11/2026" in english.text and "1 places left" in english.text


def test_today_offers_only_the_slots_still_ahead(client):
    today = places(client, "2026-11-23")
    assert "09:00" not in today and "09:15" in today and "07:00" not in today


def test_a_slot_holds_its_capacity_and_a_phone_two_bookings_a_day(client):
    assert book(client, "0912345678").status_code == 201
    assert book(client, "0987654321").status_code == 201
    refused(book(client, "0355555555"), 409, "booking.slot_full")
    assert places(client)["07:15"] == 0
    # the same phone, another service and slot, the same day: the second is its last
    second = book(client, "0912345678", service="dat-dai", slot="08:00", day="2026-11-25")
    assert second.status_code == 201
    assert book(client, "0912345678", slot="09:00", day="2026-11-25").status_code == 201
    body = refused(
        book(client, "+84 912 345 678", slot="10:00", day="2026-11-25"), 409, "booking.phone_limit"
    )
    assert "tối đa" in body["vi"]
    assert book(client, "0912345678", slot="10:00", day="2026-11-26").status_code == 201


def test_a_stale_token_or_cookie_does_not_turn_a_citizens_booking_away(client):
    """A phone that once held a revoked token, or an old session cookie, books as anyone."""
    stale = {"Authorization": "Bearer xaso_revoked_long_ago"}
    made = client.post("/api/public/bookings", json={**BOOK, "phone": "0912345678"},
                       headers=stale)  # fmt: skip
    assert made.status_code == 201, made.text
    client.cookies.set("xaso_session", "da-het-han")
    cancelled = client.post(
        "/api/public/bookings/cancel",
        json={"code": made.json()["code"], "phone": "0912345678"},
        headers={"Authorization": "Basic bm90OmF0b2tlbg=="},
    )
    assert cancelled.status_code == 200, cancelled.text
    # elsewhere a bad token is still refused before its body is read
    refused(client.post("/api/clips/tts", json={"text": "x"}, headers=stale), 401,
            "error.bad_token")  # fmt: skip


def test_a_cancel_needs_the_code_and_the_phone_and_frees_the_place(client):
    booked = book(client, "0912345678").json()
    assert set(booked) == {
        "code",
        "office",
        "kiosk",
        "service",
        "slot_ms",
        "time",
        "day",
        "weekday",
    }
    cancel = "/api/public/bookings/cancel"
    refused(client.post(cancel, json={"code": booked["code"], "phone": "0987654321"}), 404)
    refused(client.post(cancel, json={"code": "ABCDEF", "phone": "0912345678"}), 404)
    ok = client.post(cancel, json={"code": booked["code"].lower(), "phone": "0912 345 678"})
    assert ok.status_code == 200 and ok.json() == {"code": booked["code"], "cancelled": True}
    assert places(client)["07:15"] == 2
    refused(client.post(cancel, json={"code": booked["code"], "phone": "0912345678"}), 404)
    page = client.post(
        "/dat-lich/huy",
        data={"code": booked["code"], "phone": "0912345678"},
        headers={"accept": "text/html"},
    )
    assert page.status_code == 404 and "Không tìm thấy lịch" in page.text


def test_a_cancelled_booking_lets_the_phone_book_again_that_day(client):
    first = book(client, "0912345678").json()
    book(client, "0912345678", slot="08:00")
    refused(book(client, "0912345678", slot="09:00"), 409, "booking.phone_limit")
    client.post(
        "/api/public/bookings/cancel", json={"code": first["code"], "phone": "0912345678"}
    ).raise_for_status()
    assert book(client, "0912345678", slot="09:00").status_code == 201


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"phone": "12345"}, 422, "booking.bad_phone"),
        ({"phone": "02123456789"}, 422, "booking.bad_phone"),
        ({"day": "24-11-2026"}, 422, "booking.bad_day"),
        ({"day": "2026-11-28"}, 422, "booking.day_not_offered"),  # a Saturday
        ({"day": "2026-12-02"}, 422, "booking.day_not_offered"),  # the eighth working day
        ({"day": "2026-11-20"}, 422, "booking.day_not_offered"),  # in the past
        ({"day": "2026-11-24", "service": "dat-dai"}, 422, "booking.day_not_offered"),  # not Tue
        ({"slot": "12:00"}, 422, "booking.bad_slot"),
        ({"slot": "7h15"}, 422, "booking.bad_slot"),
        ({"day": "2026-11-23", "slot": "08:00"}, 422, "booking.slot_past"),
        ({"service": "cong-an"}, 422, "booking.bad_service"),
        ({"kiosk": "kiosk-9"}, 404, "booking.no_office"),
        ({"kiosk": "../../etc"}, 404, "booking.no_office"),
        ({"extra": 1}, 422, "error.invalid"),
        ({"phone": "0" * 21}, 422, "error.invalid"),
        ({"slot": None}, 422, "error.invalid"),
    ],
)
def test_bad_bookings_are_refused_clearly_and_take_nothing(client, change, status, code):
    body = refused(book(client, **change), status, code)
    assert "Traceback" not in body["detail"] and "sqlalchemy" not in body["detail"].lower()
    assert places(client)["07:15"] == 2


def test_bad_input_on_the_pages_gives_the_form_back_with_a_vietnamese_message(client):
    page = client.post(
        "/dat-lich",
        data={**BOOK, "phone": "12345"},
        headers={"accept": "text/html"},
    )
    assert page.status_code == 422
    assert "Số điện thoại không hợp lệ" in page.text and 'value="12345"' in page.text
    assert 'role="alert"' in page.text and "booking.bad_phone" not in page.text
    gone = client.post(
        "/dat-lich",
        data={**BOOK, "kiosk": "kiosk-9", "phone": "0912345678"},
        headers={"accept": "text/html"},
    )
    assert gone.status_code == 404 and "Không tìm thấy nơi tiếp nhận" in gone.text
    empty = client.post("/dat-lich", data={}, headers={"accept": "text/html"})
    assert empty.status_code in (404, 422) and 'role="alert"' in empty.text
    for path in ("/dat-lich/kiosk-9/ho-tich", "/dat-lich/kiosk-1/ho-tich?day=31/02/2026"):
        bad = client.get(path, headers={"accept": "text/html"})
        assert bad.status_code in (404, 422) and "Vui lòng" in bad.text
    huge = client.post(
        "/api/public/bookings",
        content=json.dumps({**BOOK, "phone": "0" * 100_000}),
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413


def test_an_address_that_tries_too_often_is_told_to_wait(tmp_path: Path, database_url: str):
    app = booking_app(tmp_path, database_url, attempts=3)
    clock = app.state.xaso.clock
    with TestClient(app) as client:
        assert book(client, "0912345678").status_code == 201
        refused(book(client, "1"), 422, "booking.bad_phone")  # refused ones count too
        refused(
            client.post("/api/public/bookings/cancel", json={"code": "ABCDEF", "phone": "1"}),
            422,
        )
        body = refused(book(client, "0987654321"), 429, "booking.too_many")
        assert "10 phút" in body["vi"]
        assert places(client)["07:15"] == 1  # looking is not limited
        clock.now += 11 * 60
        assert book(client, "0987654321").status_code == 201
    app.state.xaso.engine.dispose()


def test_replicas_booking_the_last_places_at_once_never_overfill_a_slot(
    tmp_path: Path, database_url: str
):
    for i in range(2):
        (tmp_path / f"r{i}").mkdir()
    apps = [booking_app(tmp_path / f"r{i}", database_url) for i in range(2)]
    results: list[int] = []
    start = threading.Barrier(8)

    def one(i: int) -> None:
        with TestClient(apps[i % 2]) as c:
            start.wait()
            results.append(book(c, f"09{i:08d}").status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == [201, 201] + [409] * 6
    for app in apps:
        app.state.xaso.engine.dispose()


def test_each_booking_and_cancel_reaches_the_kiosk_as_a_signed_retained_document(
    tmp_path: Path, database_url: str, site: Site, fleet: Fleet
):
    probe = fleet.probe(subscribe="xaso/dev/kiosk-1/bookings")
    app = booking_app(tmp_path, database_url, site_dir=site.dir, mqtt_port=fleet.broker.port)
    topic = "xaso/dev/kiosk-1/bookings"
    with TestClient(app) as client:
        station = app.state.xaso.station
        until("the controller is connected", lambda: station.connected)
        first = book(client, "0912345678").json()
        second = book(client, "0987654321", slot="08:00").json()
        both = [first["code"], second["code"]]  # by slot
        got = probe.wait_for(lambda m: m.topic == topic and _codes(m) == both)
        last = got.json()
        assert last["type"] == "bookings.set" and "sig" in last and last["to"]["id"] == "kiosk-1"
        assert "0912345678" not in got.payload.decode()  # no phone leaves the controller
        assert last["body"]["bookings"][0] == {
            "code": first["code"],
            "service": "ho-tich",
            "slot_ms": first["slot_ms"],
            "slot_min": 15,
        }
        client.post(
            "/api/public/bookings/cancel", json={"code": first["code"], "phone": "0912345678"}
        ).raise_for_status()
        after = probe.wait_for(lambda m: m.topic == topic and _codes(m) == [second["code"]])
        assert after.json()["body"]["version"] > last["body"]["version"]
    # a kiosk that connects later finds the last one kept by the broker
    late = fleet.probe(subscribe=topic)
    kept = late.wait_for(lambda m: m.topic == topic)
    assert kept.retain and kept.payload == after.payload
    app.state.xaso.engine.dispose()


def _codes(message: Any) -> list[str]:
    return [b["code"] for b in message.json()["body"]["bookings"]]


def test_every_kiosk_of_the_office_queue_gets_the_bookings(
    tmp_path: Path, database_url: str, site: Site, fleet: Fleet
):
    """Two touchscreens in one hall share a queue: a code is typed at whichever is free."""
    for kiosk in ("kiosk-1", "kiosk-2"):
        add_device(site.dir, kiosk, ["kiosk"], broker_host="127.0.0.1", force=True,
                   broker_port=fleet.broker.port, office_address="192.168.1.21",
                   queue="tan-lap")  # fmt: skip
    probe = fleet.probe(subscribe="xaso/dev/+/bookings")
    app = booking_app(tmp_path, database_url, site_dir=site.dir, mqtt_port=fleet.broker.port)
    with TestClient(app) as client:
        until("the controller is connected", lambda: app.state.xaso.station.connected)
        code = book(client, "0912345678").json()["code"]
        for kiosk in ("kiosk-1", "kiosk-2"):
            topic = f"xaso/dev/{kiosk}/bookings"
            got = probe.wait_for(lambda m, t=topic: m.topic == t and _codes(m) == [code])
            assert got.json()["to"]["id"] == kiosk  # signed for that kiosk
    app.state.xaso.engine.dispose()
