"""Issue 5 end to end: a real Mosquitto, the controller in its own process (`xaso
controller`), three speaker agents each in its own process with WAV sinks.

A broadcaster signs in over HTTP, uploads a clip and schedules it for the
group every speaker is in; each speaker downloads the clip from the
controller and plays it at the planned instant; the play events come back
through the controller's own ingest, and the proof-of-play report shows one
completed play per speaker and three for the group. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openpyxl
import pytest

from tests.audio_helpers import dominant_hz, read_samples, tone_file
from tests.controller_process import broadcaster_controller, until
from tests.timing import on_time

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
SPEAKERS = ("loa-1", "loa-2", "loa-3")


@pytest.fixture
def controller(tmp_path: Path, database_url: str, broker: Any) -> Iterator[tuple[str, str]]:
    """`xaso controller` in its own process; its URL and a broadcaster's password."""
    ctl, password = broadcaster_controller(tmp_path, database_url, broker.port)
    try:
        yield ctl.url, password
    finally:
        ctl.stop()


def sign_in(url: str, username: str, password: str) -> httpx.Client:
    """A browser-like session: the sign-in form, then the CSRF token in every change."""
    client = httpx.Client(base_url=url, timeout=120)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf
    signed = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf.group(1)},
    )
    assert signed.status_code == 303, signed.text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert token
    client.headers["X-CSRF-Token"] = token.group(1)
    return client


def recordings(tmp: Path, device: str) -> list[dict[str, Any]]:
    log = tmp / "played" / device / "played.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_upload_schedule_play_and_the_proof_of_play_report(
    tmp_path: Path, controller: tuple[str, str], fleet: Any, probe: Any
) -> None:
    url, password = controller
    for device in SPEAKERS:
        fleet.spawn(
            device,
            sections={"speaker": {"sink": "wav", "wav_dir": str(tmp_path / "played" / device)}},
        )
    for device in SPEAKERS:
        probe.status_is(device, "online", timeout=60)
    web = sign_in(url, "phat-thanh", password)

    # upload over HTTP, as the clip page does
    tone = tone_file(tmp_path / "thong-bao.wav", 660, 1.5)
    with tone.open("rb") as f:
        made = web.post(
            "/api/clips", files={"file": ("thong-bao.wav", f)}, data={"title": "Thông báo"}
        )
    assert made.status_code == 201, made.text
    clip = made.json()

    # schedule it for the group of every speaker, a few seconds ahead
    start = (datetime.now(TZ) + timedelta(seconds=15)).replace(microsecond=0, tzinfo=None)
    entry = {
        "target": {"kind": "group", "id": "all"},
        "clip_sha256": clip["sha256"],
        "dtstart": start.isoformat(),
        "rrule": "FREQ=DAILY;COUNT=1",
        "label": "Bản tin toàn xã",
    }

    def scheduled() -> Any:
        answer = web.post("/api/schedules", json=entry)
        if answer.status_code == 503 and answer.json()["code"] == "station.no_broker":
            return None  # the controller's bus is still connecting
        return answer

    created = until("the controller connects to the broker", scheduled)
    assert created.status_code == 201, created.text
    item_id = created.json()["item_id"]
    planned_ms = int(start.replace(tzinfo=TZ).timestamp() * 1000)
    # and a village's own bulletin after it, for two of the three
    village_start = start + timedelta(seconds=6)
    village = entry | {"target": {"kind": "group", "id": "thon-1"}, "label": "Tin thôn 1"}
    village |= {"dtstart": village_start.isoformat()}
    second = web.post("/api/schedules", json=village)
    assert second.status_code == 201, second.text

    # every speaker plays it, at the planned instant
    for device in SPEAKERS:
        played, *_ = until(f"{device} plays", lambda d=device: recordings(tmp_path, d))
        assert played["key"] == f"{item_id}@{start.isoformat()}"
        assert on_time(played["started_ms"], planned_ms), (played, planned_ms)
        rate, samples = read_samples(tmp_path / "played" / device / played["file"])
        assert abs(dominant_hz(samples, rate) - 660) < 10

    def aired() -> list[dict[str, Any]]:
        return [r | {"device": d} for d in SPEAKERS for r in recordings(tmp_path, d)]

    until("the village bulletin plays on two", lambda: len(aired()) == 5)
    village_plays = {r["device"]: r for r in aired() if r["label"] == "Tin thôn 1"}

    # the proof of play, through the controller's ingest, in the report
    period = {"start_ms": planned_ms - 60_000, "end_ms": planned_ms + 3_600_000}

    def report(by: str) -> list[dict[str, Any]]:
        answer = web.get("/api/reports/plays", params={**period, "by": by})
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows

    rows = until(
        "the five plays reach the report",
        lambda: (r := report("device")) and sum(x["completed"] for x in r) == 5 and r,
    )
    assert [r["key"] for r in rows] == list(SPEAKERS)
    for row in rows:
        n = 1 + (row["key"] in village_plays)
        assert (row["plays"], row["completed"], row["missed"], row["failed"]) == (n, n, 0, 0)
        assert n * 1400 <= row["total_played_ms"] <= n * 1600, row
    groups = {r["key"]: r for r in report("group")}
    assert groups["all"]["completed"] == 5 and groups["thon-1"]["completed"] == 4

    # per bulletin: the play log matches what the sinks recorded, row for row
    def log() -> list[dict[str, Any]]:
        answer = web.get("/api/reports/log", params=period)
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows

    logged = until("five plays in the play log", lambda: len(r := log()) == 5 and r)
    by_play = {(r["device_id"], r["key"]): r for r in logged}
    assert len(by_play) == 5
    for rec in aired():
        row = by_play.pop((rec["device"], rec["key"]))
        assert row["label"] == rec["label"] and row["result"] == "completed", row
        assert abs(row["actual_ms"] - rec["started_ms"]) < 1000, (row, rec)
        assert abs(row["played_ms"] - 1000 * rec["samples"] / rec["rate"]) < 100, (row, rec)
    assert by_play == {}

    # the same log as an Excel file, typed as an office sorts and sums it
    day = {"start": start.strftime("%d/%m/%Y"), "end": village_start.strftime("%d/%m/%Y")}
    sheet = web.get("/reports/log", params={**day, "format": "xlsx"})
    assert sheet.status_code == 200, sheet.text
    ws = openpyxl.load_workbook(io.BytesIO(sheet.content)).active
    assert ws is not None
    header, *cells = list(ws.values)
    assert header[:3] == ("Giờ dự kiến", "Giờ phát thực tế", "Bản tin")
    assert len(cells) == 5
    assert sorted(c[2] for c in cells) == ["Bản tin toàn xã"] * 3 + ["Tin thôn 1"] * 2
    assert all(isinstance(c[0], datetime) and isinstance(c[6], timedelta) for c in cells)
    assert {c[0].replace(tzinfo=None) for c in cells} == {start, village_start}
