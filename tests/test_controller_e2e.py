"""Issue 5 end to end: a real Mosquitto, the controller in its own process (`xaso
controller`), three speaker agents each in its own process with WAV sinks.

A broadcaster signs in over HTTP, uploads a clip and schedules it for the
group every speaker is in; each speaker downloads the clip from the
controller and plays it at the planned instant; the play events come back
through the controller's own ingest, and the proof-of-play report shows one
completed play per speaker and three for the group. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
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

    # every speaker plays it, at the planned instant
    for device in SPEAKERS:
        (played,) = until(f"{device} plays", lambda d=device: recordings(tmp_path, d))
        assert played["key"] == f"{item_id}@{start.isoformat()}"
        assert on_time(played["started_ms"], planned_ms), (played, planned_ms)
        rate, samples = read_samples(tmp_path / "played" / device / played["file"])
        assert abs(dominant_hz(samples, rate) - 660) < 10

    # the proof of play, through the controller's ingest, in the report
    period = {"start_ms": planned_ms - 60_000, "end_ms": planned_ms + 3_600_000}

    def report(by: str) -> list[dict[str, Any]]:
        answer = web.get("/api/reports/plays", params={**period, "by": by})
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows

    rows = until(
        "the three plays reach the report",
        lambda: (r := report("device")) and sum(x["completed"] for x in r) == 3 and r,
    )
    assert [r["key"] for r in rows] == list(SPEAKERS)
    for row in rows:
        assert (row["plays"], row["completed"], row["missed"], row["failed"]) == (1, 1, 0, 0)
        assert 1400 <= row["total_played_ms"] <= 1600, row
    groups = {r["key"]: r for r in report("group")}
    assert groups["all"]["completed"] == 3 and groups["thon-1"]["completed"] == 2
