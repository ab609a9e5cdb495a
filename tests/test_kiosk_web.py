"""The kiosk's JSON API and pages: every refusal a bilingual 4xx, never a 500; fuzzed.

Counter actions and ratings need an officer's sign-in (a session cookie and its
CSRF token); the citizen's pages need none and give no staff powers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.officers import hash_pin
from kiosk.service import Kiosk
from kiosk.web import MAX_BODY_BYTES, create_app
from tests.kiosk_helpers import OFFICER, OFFICERS, PIN

Headers = dict[str, str]


@pytest.fixture
def kiosk(make_kiosk: Callable[..., Kiosk]) -> Kiosk:
    return make_kiosk(officers=OFFICERS)


@pytest.fixture
def client(kiosk: Kiosk) -> Iterator[TestClient]:
    with TestClient(create_app(kiosk), raise_server_exceptions=False) as c:
        yield c


def sign_in(client: TestClient, counter: int, kind: str = "counters") -> Headers:
    """The headers of a signed-in page at ``counter``: its cookie and its CSRF token."""
    r = client.post(f"/api/{kind}/{counter}/session", json={"officer": OFFICER["id"], "pin": PIN})
    assert r.status_code == 200, r.text
    set_cookie = r.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    client.cookies.clear()  # each request below names its session
    cookie = r.headers["set-cookie"].split(";", 1)[0]
    return {"Cookie": cookie, "X-CSRF-Token": r.json()["csrf"]}


def refused(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["vi"] and body["en"] and body["message"] == f"{body['vi']} / {body['en']}"
    if code is not None:
        assert body["error"] == code
    return body


def test_a_ticket_through_the_api(client: TestClient) -> None:
    r = client.post("/api/tickets", json={"service": "ho-tich"})
    assert r.status_code == 201
    ticket = r.json()
    assert ticket["number"] == "A001" and ticket["people_ahead"] == 0
    assert client.get(f"/api/tickets/{ticket['ticket_id']}").json()["state"] == "waiting"
    staff, rater = sign_in(client, 2), sign_in(client, 2, "ratings")
    r = client.post("/api/counters/2/next", headers=staff)
    assert r.status_code == 200 and r.json()["ticket"]["number"] == "A001"
    assert client.get("/api/state").json()["counters"][1]["number"] == "A001"
    assert client.post("/api/counters/2/served", headers=staff).status_code == 200
    to_rate = client.get("/api/state").json()["counters"][1]["to_rate"]
    assert to_rate == {"ticket_id": ticket["ticket_id"], "number": "A001"}
    rating = {"counter": 2, "level": 4, "ticket_id": ticket["ticket_id"]}
    r = client.post("/api/ratings", json=rating, headers=rater)
    assert r.status_code == 201 and r.json()["vi"] == "Hài lòng"
    assert client.get("/api/state").json()["counters"][1]["to_rate"] is None  # the page resets
    body = refused(client.post("/api/ratings", json=rating | {"level": 1}, headers=rater), 409)
    assert body["error"] == "already_rated" and "đã được đánh giá rồi" in body["vi"]
    assert client.post("/api/counters/2/next", headers=staff).json()["empty"] is True
    services = client.get("/api/services").json()
    assert services[0] == {
        "code": "ho-tich",
        "name_vi": "Hộ tịch",
        "name_en": "Civil status",
        "prefix": "A",
    }


def test_counter_actions_and_ratings_without_a_sign_in_are_refused(
    client: TestClient, kiosk: Kiosk
) -> None:
    ticket = client.post("/api/tickets", json={"service": "ho-tich"}).json()
    for action in ("next", "call", "recall", "skip", "served", "transfer", "pause", "resume"):
        body = refused(client.post(f"/api/counters/1/{action}", json={}), 401, "sign_in_required")
        assert "Cần đăng nhập" in body["vi"] and "PIN" in body["vi"]
    rating = {"counter": 1, "level": 5, "ticket_id": ticket["ticket_id"]}
    refused(client.post("/api/ratings", json=rating), 401, "sign_in_required")
    staff = sign_in(client, 1)
    # the cookie without the page's token (a cross-site form), a forged token, another counter
    refused(client.post("/api/counters/1/next", headers={"Cookie": staff["Cookie"]}), 403, "csrf")
    refused(client.post("/api/counters/1/next", headers=staff | {"X-CSRF-Token": "x"}), 403)
    refused(client.post("/api/counters/2/next", headers=staff), 401, "sign_in_required")
    refused(client.post("/api/ratings", json=rating, headers=staff), 401)  # no rating powers
    rater = sign_in(client, 1, "ratings")
    refused(client.post("/api/counters/1/next", headers=rater), 401)  # no staff powers
    refused(client.post("/api/counters/1/next", headers={"Cookie": "xaso_counter=guess"}), 401)
    assert kiosk.office.current(1, kiosk.now_ms()) is None  # nothing happened
    assert client.post("/api/counters/1/next", headers=staff).status_code == 200
    assert client.post("/api/counters/1/signout", headers=staff).status_code == 200
    refused(client.post("/api/counters/1/served", headers=staff), 401, "sign_in_required")


def test_wrong_pins_lock_the_counter_for_a_while(client: TestClient, kiosk: Kiosk) -> None:
    wrong = {"officer": OFFICER["id"], "pin": "0000"}
    for _ in range(kiosk.cfg.pin_attempts):
        body = refused(client.post("/api/counters/3/session", json=wrong), 401, "wrong_pin")
        assert "Sai cán bộ hoặc mã PIN" in body["vi"]
    right = {"officer": OFFICER["id"], "pin": PIN}
    body = refused(client.post("/api/counters/3/session", json=right), 429, "locked")
    assert "thử lại sau 60 giây" in body["vi"] and "60 seconds" in body["en"]
    assert client.post("/api/counters/2/session", json=right).status_code == 200  # per counter
    clock: Any = kiosk.now_ms
    clock.ms += 60_000
    assert client.post("/api/counters/3/session", json=right).status_code == 200
    for bad in (
        {"officer": "khong-co", "pin": PIN},
        {"officer": OFFICER["id"], "pin": 2468},
        {"officer": OFFICER["id"], "pin": "1" * 13},
        {"officer": OFFICER["id"], "pin": PIN, "extra": 1},
        {"pin": PIN},
    ):
        assert client.post("/api/counters/3/session", json=bad).status_code in (401, 422)
    refused(client.post("/api/counters/9/session", json=right), 422, "unknown_counter")


def test_officers_are_held_to_their_counters_and_must_be_configured(
    make_kiosk: Callable[..., Kiosk],
) -> None:
    second = {"id": "can-bo-binh", "name": "Trần Thị Bình", "pin_hash": hash_pin("1357")}
    kiosk = make_kiosk(officers=[OFFICER, second | {"counters": [3]}])
    with TestClient(create_app(kiosk)) as client:
        r = client.post("/api/counters/1/session", json={"officer": "can-bo-binh", "pin": "1357"})
        assert refused(r, 403, "not_this_counter")["vi"] == (
            "Cán bộ Trần Thị Bình không làm việc ở quầy 1"
        )
        page = client.get("/counter/1").text
        assert "Nguyễn Văn An" in page and "Trần Thị Bình" not in page
    bare = make_kiosk(web_port=kiosk.cfg.web_port + 1)
    with TestClient(create_app(bare)) as client:
        r = client.post("/api/counters/1/session", json={"officer": "can-bo-an", "pin": PIN})
        assert "[[kiosk.officers]]" in refused(r, 503, "no_officers")["vi"]
        assert "Chưa có cán bộ nào" in client.get("/counter/1").text


def test_bad_input_gets_a_clear_bilingual_4xx(client: TestClient) -> None:
    refused(client.post("/api/tickets", json={"service": "khong-co"}), 422, "unknown_service")
    refused(client.post("/api/tickets", json={"service": "x" * 500}), 422, "bad_request")
    refused(client.post("/api/tickets", json={"service": 7}), 422, "bad_request")
    refused(client.post("/api/tickets", json={"service": "ho-tich", "priority": "yes"}), 422)
    refused(client.post("/api/tickets", json={"service": "ho-tich", "extra": 1}), 422)
    refused(client.post("/api/tickets", json=[1, 2]), 422, "bad_request")
    refused(client.post("/api/tickets", content=b"{not json"), 422, "bad_request")
    refused(client.post("/api/tickets", content=b"x" * (MAX_BODY_BYTES + 1)), 413, "too_large")
    refused(client.post("/api/counters/0/next"), 422, "unknown_counter")
    body = refused(client.post("/api/counters/4/next"), 422, "unknown_counter")
    assert "1 đến 3" in body["vi"] and "1 to 3" in body["en"]
    refused(client.post("/api/counters/abc/next"), 422, "bad_request")
    staff, rater = sign_in(client, 1), sign_in(client, 1, "ratings")

    def post(path: str, json: Any = None, headers: Headers = staff) -> Any:
        return client.post(path, json=json, headers=headers)

    refused(post("/api/counters/1/dance"), 404, "unknown_action")
    refused(post("/api/counters/1/recall"), 409, "no_ticket")
    refused(post("/api/counters/1/transfer", {"service": "khong-co"}), 422)
    refused(post("/api/counters/1/transfer", {"service": "a" * 100}), 422)
    refused(post("/api/counters/1/transfer", {"service": "dat-dai", "note": "x" * 201}), 422)
    refused(post("/api/counters/1/call", {"number": "A001"}), 404, "unknown_number")
    refused(post("/api/counters/1/call", {"number": 1}), 422, "bad_request")
    refused(post("/api/counters/1/call", {"number": "A" * 17}), 422, "bad_request")
    refused(post("/api/counters/1/call", {}), 404, "unknown_number")
    some = {"ticket_id": "nope"}
    refused(post("/api/ratings", {"counter": 1, "level": 9} | some, rater), 422, "bad_rating")
    refused(post("/api/ratings", {"counter": 9, "level": 5} | some, rater), 422, "unknown_counter")
    refused(post("/api/ratings", {"counter": "1", "level": 5} | some, rater), 422, "bad_request")
    refused(post("/api/ratings", {"counter": 1, "level": 5}, rater), 422, "bad_request")
    refused(post("/api/ratings", {"counter": 1, "level": 5} | some, rater), 404, "unknown_ticket")
    ticket = client.post("/api/tickets", json={"service": "ho-tich"}).json()
    early = {"counter": 1, "level": 5, "ticket_id": ticket["ticket_id"]}
    refused(post("/api/ratings", early, rater), 409, "not_to_rate")  # still waiting
    refused(client.get("/api/tickets/nope"), 404, "unknown_ticket")
    refused(client.get("/api/tickets/" + "z" * 100), 422, "bad_request")
    refused(client.get("/khong-co"), 404, "not_found")
    refused(client.delete("/api/tickets"), 405)


def test_pages_in_vietnamese_first_and_english(client: TestClient, kiosk: Kiosk) -> None:
    page = client.get("/kiosk").text
    assert '<html lang="vi">' in page and "Mời chọn dịch vụ" in page and "Hộ tịch" in page
    r = client.get("/kiosk?lang=en")
    assert "Choose a service" in r.text and r.cookies.get("lang") == "en"
    assert "Choose a service" in client.get("/kiosk").text  # the cookie keeps the choice
    client.cookies.clear()
    signin = client.get("/counter/2").text
    assert "Cán bộ đăng nhập quầy" in signin and "Gọi số tiếp" not in signin
    assert "Cán bộ bật máy đánh giá" in client.get("/rate/1").text
    assert "Gọi số tiếp" in client.get("/counter/2", headers=sign_in(client, 2)).text
    assert "Rất không hài lòng" in client.get("/rate/1", headers=sign_in(client, 1, "ratings")).text
    assert "Màn hình gọi số" in client.get("/display").text
    ticket = kiosk.issue("dat-dai")
    assert "B001" in client.get(f"/ve/{ticket['ticket_id']}").text
    kiosk.counter(3, "next")
    assert (
        "B001" in client.get("/display/3").text
        and "Đang phục vụ số" in client.get("/display/3").text
    )
    assert "Now serving" in client.get("/display/3?lang=en").text
    english = client.get("/counter/1?lang=en").text
    assert "Officer sign-in, counter 1" in english and "Sign in" in english
    assert "switch on the rating device" in client.get("/rate/1").text  # the cookie kept "en"
    client.cookies.clear()
    for bad in ("/counter/0", "/counter/99", "/rate/4", "/display/4"):
        r = client.get(bad)
        assert r.status_code == 422 and "Không có quầy số" in r.text
    r = client.get("/ve/khong-co")
    assert r.status_code == 404 and "Không tìm thấy vé" in r.text
    assert client.get("/").url.path == "/kiosk"


ENDPOINTS = [
    ("post", "/api/tickets"),
    ("post", "/api/ratings"),
    ("post", "/api/counters/1/next"),
    ("post", "/api/counters/2/transfer"),
    ("post", "/api/counters/3/pause"),
    ("post", "/api/counters/1/call"),
    ("post", "/api/counters/2/session"),
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "service": st.sampled_from(["ho-tich", "dat-dai", "khong-co", "", "A"]) | JSON,
        "priority": JSON,
        "counter": st.integers(-5, 10) | JSON,
        "level": st.integers(-2, 8) | JSON,
        "ticket_id": JSON,
        "number": st.sampled_from(["A001", "a001", "Z9", ""]) | JSON,
        "note": JSON,
        "officer": st.sampled_from(["can-bo-an", ""]) | JSON,
        "pin": st.sampled_from(["2468", "0000"]) | JSON,
    },
)


@pytest.fixture
def sessions(client: TestClient) -> dict[str, Headers]:
    """Signed in everywhere, so the fuzz reaches past the sign-in (hypothesis reuses it)."""
    made = {str(n): sign_in(client, n) for n in (1, 2, 3)}
    return made | {"ratings": sign_in(client, 1, "ratings"), "": {}}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(endpoint=st.sampled_from(ENDPOINTS), body=FIELDS | JSON)
def test_fuzzed_json_never_breaks_the_server(
    client: TestClient, endpoint: tuple[str, str], body: Any, sessions: dict[str, Headers]
) -> None:
    method, path = endpoint
    parts = path.split("/")
    headers = sessions["ratings" if "ratings" in path else parts[3] if len(parts) > 3 else ""]
    r = client.request(method, path, content=json.dumps(body), headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        refused(r, r.status_code)


def test_a_transfer_note_reaches_the_next_counter_and_not_the_hall(client: TestClient) -> None:
    client.post("/api/tickets", json={"service": "ho-tich"})
    one, three = sign_in(client, 1), sign_in(client, 3)
    assert client.post("/api/counters/1/next", headers=one).json()["note"] is None
    note = "Cần bổ sung bản sao sổ đỏ <b>"
    moved = client.post(
        "/api/counters/1/transfer", json={"service": "dat-dai", "note": note}, headers=one
    )
    assert moved.status_code == 200 and moved.json()["ticket"]["service"] == "dat-dai"
    called = client.post("/api/counters/3/next", headers=three).json()
    assert (called["ticket"]["number"], called["note"]) == ("A001", note)
    page = client.get("/counter/3", headers=three).text
    assert "Ghi chú của quầy trước" in page and "bản sao sổ đỏ &lt;b&gt;" in page
    assert "sổ đỏ" not in client.get("/api/state").text + client.get("/display").text
    assert 'id="handover" class="notice warn hidden"' in client.get("/counter/1", headers=one).text


def test_the_status_page_tells_the_wait_and_when_the_turn_is_near(
    make_kiosk: Callable[..., Kiosk],
) -> None:
    from tests.conftest import KioskClock

    clock = KioskClock()
    kiosk = make_kiosk(officers=OFFICERS, clock=clock, counters=1)
    tickets = [kiosk.issue("ho-tich") for _ in range(6)]
    with TestClient(create_app(kiosk), raise_server_exceptions=False) as client:
        last = f"/ve/{tickets[-1]['ticket_id']}"
        page = client.get(last).text  # no service yet today: the usual 5 minutes each
        assert "khoảng 25 phút" in page and "ước tính sơ bộ" in page and "Sắp đến lượt" not in page
        for _ in range(2):  # two citizens served in 2 minutes each
            kiosk.counter(1, "next")
            clock.ms += 120_000
            kiosk.counter(1, "served")
        view = client.get(f"/api/tickets/{tickets[-1]['ticket_id']}").json()
        assert view["people_ahead"] == 3 and view["wait_min"] == 6 and not view["near"]
        kiosk.counter(1, "next")
        page = client.get(last).text
        assert "Sắp đến lượt" in page and "khoảng 4 phút" in page and "sơ bộ" not in page
        english = client.get(last + "?lang=en").text
        assert "Your turn is near" in english and "about 4 min" in english
        kiosk.counter(1, "pause")
        assert "chưa ước tính được" in client.get(last + "?lang=vi").text
