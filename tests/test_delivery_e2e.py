"""Issue 11: nothing lost when the controller dies. A real Mosquitto, `xaso controller`
in its own process, two speakers playing a schedule and a kiosk issuing and calling
tickets, each agent in its own process.

The controller is killed (SIGKILL) and started again three times while the
speakers play and citizens take numbers. A witness on the broker (a persistent
session that never goes away) sees every event the agents send. At the end,
every `play.*` and `ticket.*` event it saw is in the controller's database
exactly once and nothing else is, each play the speakers made is in it, and the
proof-of-play report counts every play. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from cli.demo.devices import DEMO_OFFICER, DEMO_PIN, simulated_kiosk
from controller.db.fleet_tables import EventRecord
from tests.audio_helpers import tone_file
from tests.controller_process import ControllerProcess, broadcaster_controller, until
from tests.fleet import AgentProcess
from tests.test_controller_e2e import TZ, recordings, sign_in

SPEAKERS = ("loa-1", "loa-2")
SLOTS, EVERY_S = 15, 6  # the schedule: a play every 6 s, 15 times, on both speakers
KILLS = 3
KINDS = ("play.", "ticket.")


@pytest.fixture
def controller(
    tmp_path: Path, database_url: str, broker: Any
) -> Iterator[tuple[ControllerProcess, str]]:
    ctl, password = broadcaster_controller(
        tmp_path, database_url, broker.port, 'client_id = "xaso-controller-a"\n'
    )
    try:
        yield ctl, password
    finally:
        ctl.stop()


class Citizens:
    """Takes a number and has counter 1 call the next one, every second, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.issued = self.called = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            signed = http.post(  # counter 1's officer, as the demo configures one
                "/api/counters/1/session", json={"officer": DEMO_OFFICER, "pin": DEMO_PIN}
            )
            if signed.status_code != 200:
                self.errors.append(signed.text)
                return
            http.headers["X-CSRF-Token"] = signed.json()["csrf"]
            while not self.stop.wait(1.0):
                ticket = http.post("/api/tickets", json={"service": "ho-tich"})
                if ticket.status_code != 201:
                    self.errors.append(ticket.text)
                    continue
                self.issued += 1
                called = http.post("/api/counters/1/next", json={})
                if called.status_code == 200 and called.json()["ticket"] is not None:
                    self.called += 1


def witnessed(probe: Any) -> dict[tuple[str, str], str]:
    """(device, event id) -> type of every play.* and ticket.* event on the broker."""
    seen = {}
    for m in list(probe.messages):
        if m.topic.endswith("/event"):
            event = json.loads(m.payload)
            if event["type"].startswith(KINDS):
                seen[(m.topic.split("/")[2], event["id"])] = event["type"]
    return seen


def stored(database_url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(select(EventRecord.device_id, EventRecord.event_id, EventRecord.type))
            return [(d, e, t) for d, e, t in rows if t.startswith(KINDS)]
    finally:
        engine.dispose()


def total_plays(tmp: Path) -> int:
    return sum(len(recordings(tmp, d)) for d in SPEAKERS)


@pytest.mark.slow
@pytest.mark.timeout(600)  # on a loaded machine each restart of the controller takes longer
def test_three_controller_kills_lose_no_play_and_no_ticket(
    tmp_path: Path, controller: tuple[ControllerProcess, str], database_url: str, fleet: Any
) -> None:
    ctl, password = controller
    witness = fleet.probe()
    for device in SPEAKERS:
        fleet.spawn(
            device,
            sections={"speaker": {"sink": "wav", "wav_dir": str(tmp_path / "played" / device)}},
        )
    kiosk_config = fleet.config("kiosk-1")
    kiosk = simulated_kiosk(kiosk_config, "kiosk-1", tmp_path)
    fleet.processes.append(AgentProcess(kiosk_config, tmp_path / "kiosk-1.log").start())
    for device in (*SPEAKERS, "kiosk-1"):
        witness.status_is(device, "online", timeout=60)

    web = sign_in(ctl.url, "phat-thanh", password)
    with tone_file(tmp_path / "ban-tin.wav", 660, 1.0).open("rb") as f:
        clip = web.post("/api/clips", files={"file": ("ban-tin.wav", f)}, data={"title": "Tin"})
    assert clip.status_code == 201, clip.text
    # one entry per slot: an entry may repeat at most every 15 minutes
    start = (datetime.now(TZ) + timedelta(seconds=20)).replace(microsecond=0, tzinfo=None)
    for slot in range(SLOTS):
        at = start + timedelta(seconds=EVERY_S * slot)
        entry = {
            "target": {"kind": "group", "id": "all"},
            "clip_sha256": clip.json()["sha256"],
            "dtstart": at.isoformat(),
            "rrule": "FREQ=DAILY;COUNT=1",
            "label": f"Bản tin {slot + 1}",
        }

        def scheduled(entry: dict[str, Any] = entry) -> Any:
            answer = web.post("/api/schedules", json=entry)
            return None if answer.status_code == 503 else answer  # the bus still connecting

        created = until("the schedule is accepted", scheduled)
        assert created.status_code == 201, created.text
    web.close()

    until("the kiosk serves its pages", lambda: httpx.get(kiosk.url + "/api/state").is_success)
    citizens = Citizens(kiosk.url)
    citizens.thread.start()
    every_play = SLOTS * len(SPEAKERS)
    try:
        for kill in range(KILLS):
            until(
                f"plays before kill {kill + 1}",
                lambda k=kill: total_plays(tmp_path) >= min(2 + 8 * k, every_play),
            )
            ctl.kill9()
            plays, issued = total_plays(tmp_path), citizens.issued
            # while it is down, the speakers play a slot (unless a slow restart let the
            # schedule run out) and citizens take numbers
            until(
                "plays and tickets while the controller is down",
                lambda p=plays, i=issued: (
                    total_plays(tmp_path) >= min(p + 2, every_play) and citizens.issued >= i + 2
                ),
            )
            ctl.start()
        until("every slot played", lambda: total_plays(tmp_path) == every_play)
    finally:
        citizens.stop.set()
        citizens.thread.join(30)
    assert not citizens.errors and citizens.issued > 0 and citizens.called > 0

    # what the agents sent, as the witness saw it, reaches the database: once, and all of it
    def converged() -> list[tuple[str, str, str]] | None:
        seen, rows = witnessed(witness), stored(database_url)
        kinds = Counter(seen.values())
        speakers_done = sum(t == "play.finished" and d in SPEAKERS for (d, _), t in seen.items())
        enough = (
            kinds["ticket.issued"] == citizens.issued
            and kinds["ticket.called"] == citizens.called
            and speakers_done == SLOTS * len(SPEAKERS)
        )
        return rows if enough and {(d, e): t for d, e, t in rows} == seen else None

    try:
        rows = until("every event is stored", converged)
    except AssertionError:
        seen, rows = witnessed(witness), stored(database_url)
        kept = {(d, e): t for d, e, t in rows}
        missing = Counter(t for k, t in seen.items() if k not in kept)
        extra = Counter(t for k, t in kept.items() if k not in seen)
        raise AssertionError(
            f"seen {Counter(seen.values())}, missing from the database {missing}, "
            f"not seen {extra}; {citizens.issued} issued, {citizens.called} called"
        ) from None
    assert len(rows) == len({(d, e) for d, e, _ in rows}), "an event is stored twice"

    web = sign_in(ctl.url, "phat-thanh", password)
    planned_ms = int(start.replace(tzinfo=TZ).timestamp() * 1000)
    period: dict[str, str | int] = {
        "start_ms": planned_ms - 60_000,
        "end_ms": planned_ms + 3_600_000,
        "by": "device",
    }
    report = web.get("/api/reports/plays", params=period)
    assert report.status_code == 200, report.text
    by_device = {row["key"]: row for row in report.json()}
    for device in SPEAKERS:
        assert by_device[device]["completed"] == len(recordings(tmp_path, device)) == SLOTS
