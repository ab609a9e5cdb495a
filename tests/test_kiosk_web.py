"""The kiosk's JSON API and pages: every refusal a bilingual 4xx, never a 500; fuzzed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.service import Kiosk
from kiosk.web import MAX_BODY_BYTES, create_app


@pytest.fixture
def kiosk(make_kiosk: Callable[..., Kiosk]) -> Kiosk:
    return make_kiosk()


@pytest.fixture
def client(kiosk: Kiosk) -> Iterator[TestClient]:
    with TestClient(create_app(kiosk), raise_server_exceptions=False) as c:
        yield c


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
    r = client.post("/api/counters/2/next")
    assert r.status_code == 200 and r.json()["ticket"]["number"] == "A001"
    assert client.get("/api/state").json()["counters"][1]["number"] == "A001"
    assert client.post("/api/counters/2/served").status_code == 200
    r = client.post("/api/ratings", json={"counter": 2, "level": 4})
    assert r.status_code == 201 and r.json()["vi"] == "Hài lòng"
    assert client.post("/api/counters/2/next").json()["empty"] is True
    services = client.get("/api/services").json()
    assert services[0] == {
        "code": "ho-tich",
        "name_vi": "Hộ tịch",
        "name_en": "Civil status",
        "prefix": "A",
    }


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
    refused(client.post("/api/counters/1/dance"), 404, "unknown_action")
    refused(client.post("/api/counters/1/recall"), 409, "no_ticket")
    refused(client.post("/api/counters/1/transfer", json={"service": "khong-co"}), 422)
    refused(client.post("/api/counters/1/transfer", json={"service": "a" * 100}), 422)
    refused(client.post("/api/ratings", json={"counter": 1, "level": 9}), 422, "bad_rating")
    refused(client.post("/api/ratings", json={"counter": 9, "level": 5}), 422, "unknown_counter")
    refused(client.post("/api/ratings", json={"counter": "1", "level": 5}), 422, "bad_request")
    refused(client.post("/api/ratings", json={"counter": 1, "level": 5}), 409, "nothing_to_rate")
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
    assert "Gọi số tiếp" in client.get("/counter/2").text
    assert "Màn hình gọi số" in client.get("/display").text
    assert "Rất không hài lòng" in client.get("/rate/1").text
    ticket = kiosk.issue("dat-dai")
    assert "B001" in client.get(f"/ve/{ticket['ticket_id']}").text
    for bad in ("/counter/0", "/counter/99", "/rate/4"):
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
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(endpoint=st.sampled_from(ENDPOINTS), body=FIELDS | JSON)
def test_fuzzed_json_never_breaks_the_server(
    client: TestClient, endpoint: tuple[str, str], body: Any
) -> None:
    method, path = endpoint
    r = client.request(method, path, content=json.dumps(body))
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        refused(r, r.status_code)
