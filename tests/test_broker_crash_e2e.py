"""Issue 11: nothing lost when the broker crashes. A real Mosquitto killed with
SIGKILL (no last snapshot) three times mid-stream and started again, `xaso
controller` alive in its own process, two agents in their own processes
writing `play.*` records.

An agent logs each event's id once its write has returned (the edge's
promise starts there). While the broker is down the agents go on recording,
so they hold records it never saw; what it took just before each kill it
loses. Every logged id must end in the controller's database exactly once,
on SQLite and PostgreSQL: the agents keep each record until the controller's
receipt names it, and send again what no receipt named in time
(docs/delivery.md). With `receipts = false` on the agents this test fails:
the broker's lost messages are gone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from controller.db.fleet_tables import DeviceState, EventRecord
from tests.controller_process import ControllerProcess, broadcaster_controller, until

WRITERS = ("loa-1", "loa-2")
EVERY_S, COUNT = 0.02, 900  # each agent: an event every 20 ms, 900 in all
KILLS = 3
DOWN_EVENTS = 40  # each agent records at least this many while the broker is down
RECEIPT_TIMEOUT_S = 3.0  # short, so the test's resends come soon (60 s by default)


@pytest.fixture
def controller(tmp_path: Path, database_url: str, broker: Any) -> Iterator[ControllerProcess]:
    ctl, _ = broadcaster_controller(
        tmp_path, database_url, broker.port, 'client_id = "xaso-controller-a"\n'
    )
    try:
        yield ctl
    finally:
        ctl.stop()


def written(path: Path) -> tuple[list[str], bool]:
    """The ids an agent logged as written (a line cut short by a read is left out), and
    whether it has written them all."""
    if not path.exists():
        return [], False
    text = path.read_text()
    lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
    ids = [line for line in lines if line and line != "done"]
    return ids, "done" in lines


def stored(database_url: str) -> dict[str, list[str]]:
    """Event ids of every play.* row in the database, by device (duplicates kept)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                select(EventRecord.device_id, EventRecord.event_id).where(
                    EventRecord.type.like("play.%")
                )
            )
            found: dict[str, list[str]] = {}
            for device, event_id in rows:
                found.setdefault(device, []).append(event_id)
            return found
    finally:
        engine.dispose()


def resends(database_url: str) -> dict[str, Any]:
    """Each agent's count of records sent again, from its latest telemetry (a figure)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(select(DeviceState.device_id, DeviceState.telemetry))
            return {d: (t or {}).get("outbox_resent") for d, t in rows if d in WRITERS}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_three_broker_kills_mid_stream_lose_no_record(
    tmp_path: Path, controller: ControllerProcess, database_url: str, fleet: Any, broker: Any
) -> None:
    logs = {d: tmp_path / f"{d}-written.log" for d in WRITERS}
    for device in WRITERS:
        fleet.event_writer(
            device, logs[device], EVERY_S, COUNT, receipt_timeout_s=RECEIPT_TIMEOUT_S
        ).start()
    until(
        "both agents' first records are in the database",
        lambda: all(stored(database_url).get(d) for d in WRITERS),
    )

    held = []
    for kill in range(KILLS):
        step = (kill + 1) * COUNT // (KILLS + 2)
        until(
            f"records streaming before kill {kill + 1}",
            lambda s=step: all(len(written(logs[d])[0]) >= s for d in WRITERS),
        )
        broker.kill()  # SIGKILL: what it took since its last snapshot is gone
        at_kill = {d: len(written(logs[d])[0]) for d in WRITERS}
        until(
            "the agents record while the broker is down",
            lambda a=at_kill: all(len(written(logs[d])[0]) >= a[d] + DOWN_EVENTS for d in WRITERS),
        )
        held.append({d: len(written(logs[d])[0]) - at_kill[d] for d in WRITERS})
        broker.start()
    until("every agent wrote all its records", lambda: all(written(logs[d])[1] for d in WRITERS))

    expected = {d: set(written(logs[d])[0]) for d in WRITERS}
    assert all(len(ids) == COUNT for ids in expected.values())

    def home() -> bool:
        found = stored(database_url)
        return all(expected[d] <= set(found.get(d, [])) for d in WRITERS)

    try:
        until("every record is in the database", home)
    except AssertionError:
        found = stored(database_url)
        missing = {d: len(expected[d] - set(found.get(d, []))) for d in WRITERS}
        raise AssertionError(f"records missing from the database, by agent: {missing}") from None
    found = stored(database_url)
    for device in WRITERS:
        assert Counter(found[device]) == Counter(expected[device]), "stored twice, or not sent"
    resent = resends(database_url)
    print(
        f"\nbroker killed {KILLS} times; records held while it was down: {held}; "
        f"{COUNT} records per agent, all stored once; sent again for want of a receipt "
        f"(the agents' last telemetry): {resent}"
    )
