"""Device-list pages shared by concurrent requests, and what makes them stale.

The end-to-end case is event-driven: a speaker's status goes through a real
Mosquitto and the controller's own ingest, and the next page shows it while
the app's clock stands still (so the pages' lifetime cannot be what refreshed
it). On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import Device, DeviceState, TelemetrySample
from controller.db.fleet_writes import FleetWrites
from controller.fleet.shared_pages import SharedPages
from controller.settings import load_settings
from tests.conftest import Fleet

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    """Poll until `check()` is truthy; the deadline only stops a broken run from hanging."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.1)
    return value


class Version:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        return self.n


def test_concurrent_askers_of_one_page_share_one_build() -> None:
    version, now = Version(), [1_000]
    pages = SharedPages(version, lambda: now[0])
    built: list[int] = []

    def build() -> str:
        built.append(1)
        return "page"

    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(pages.get(("api", 1), build))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == ["page"] * 8 and len(built) == 1 and pages.builds == 1
    assert pages.get(("api", 2), lambda: "other") == "other" and pages.builds == 2


def test_a_page_is_built_again_after_a_write_or_its_lifetime() -> None:
    version, now = Version(), [1_000]
    pages = SharedPages(version, lambda: now[0], max_age_ms=1000)
    answers = iter(range(100))

    def get() -> int:
        return pages.get("k", lambda: next(answers))

    assert get() == 0 and get() == 0
    version.n += 1  # something shown was written
    assert get() == 1 and get() == 1
    now[0] += 999
    assert get() == 1
    now[0] += 1  # its lifetime is over
    assert get() == 2
    now[0] -= 5_000  # a clock set back does not keep a page forever
    assert get() == 3

    def written_meanwhile() -> int:
        version.n += 1  # committed while the page was being read: the page is stale
        return 99

    assert pages.get("w", written_meanwhile) == 99
    assert pages.get("w", lambda: 100) == 100


def test_only_the_most_recently_read_pages_are_kept() -> None:
    pages = SharedPages(Version(), lambda: 0, size=2)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently read when "c" comes
        pages.get(key, lambda k=key: k)  # type: ignore[misc]
    assert pages.builds == 3
    pages.get("a", lambda: "again")
    assert pages.builds == 3
    assert pages.get("b", lambda: "b2") == "b2" and pages.builds == 4


@pytest.fixture
def sessions(database_url: str) -> Iterator[tuple[sessionmaker[Session], FleetWrites]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    writes = FleetWrites(engine)
    yield session_factory(engine), writes
    engine.dispose()


def test_only_committed_writes_to_what_the_list_shows_count(
    sessions: tuple[sessionmaker[Session], FleetWrites],
) -> None:
    factory, writes = sessions
    with factory.begin() as db:
        db.execute(insert(Device).values(id="loa-1", name="", roles=["speaker"], created_ms=1))
        db.execute(insert(DeviceState).values(device_id="loa-1"))
    assert writes.version == 1
    with factory() as db:
        db.execute(update(DeviceState).values(state="offline"))
        db.rollback()
        db.scalars(select(Device)).all()
        db.execute(text("SELECT 1"))
        db.commit()
    assert writes.version == 1  # rolled back, then only read
    with factory.begin() as db:  # a sample alone changes no row the list shows
        db.execute(insert(TelemetrySample).values(device_id="loa-1", ts_ms=1, received_ms=1))
    assert writes.version == 1
    with factory.begin() as db:
        db.execute(update(DeviceState).values(state="offline"))
    assert writes.version == 2


@pytest.fixture
def app_client(fleet: Fleet, tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, Any]]:
    """The whole app, with its lifespan (station, ingest, fleet service) on the fleet's
    broker, an admin's API token, and a clock that stands still."""
    config = tmp_path / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{fleet.site.dir}"\n[database]\nurl = "{database_url}"\n'
        f"[mqtt]\nport = {fleet.broker.port}\n",
        encoding="utf-8",
    )
    frozen = time.time()
    app = create_app(load_settings(config), clock=lambda: frozen)
    state = app.state.xaso
    with state.sessions() as db:
        user = create_user(
            db, state.auth.passwords, username="admin", display_name="Admin",
            role="admin", password="mat-khau-dai-du", now_ms=state.now_ms(),
        )  # fmt: skip
        owner = Principal("user", user.id, "admin", "Admin", Role.ADMIN, PERMISSIONS[Role.ADMIN])
        token, _ = create_token(db, owner, "t", "admin", state.now_ms())
        db.commit()
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, state


def test_a_shared_page_shows_a_speaker_going_offline_at_once(
    app_client: tuple[TestClient, Any], fleet: Fleet
) -> None:
    client, state = app_client
    speaker = fleet.probe(as_device="loa-1", subscribe="xaso/dev/loa-1/cmd")

    def status(s: str) -> None:
        body = {"state": s, "ts": int(time.time() * 1000), "agent": "0.1.0", "roles": ["speaker"]}
        speaker.publish("xaso/dev/loa-1/status", json.dumps(body).encode(), retain=True)

    def stored_state() -> str | None:
        with state.sessions() as db:
            return db.scalar(select(DeviceState.state).where(DeviceState.device_id == "loa-1"))

    def listed() -> dict[str, Any]:
        page = client.get("/api/devices", params={"group": "thon-1"})
        assert page.status_code == 200, page.text
        return {d["id"]: d["state"] for d in page.json()["devices"]}

    status("online")
    eventually(lambda: stored_state() == "online", "ingest stores loa-1 online")
    assert listed()["loa-1"] == "online"
    builds = state.pages.builds
    assert listed()["loa-1"] == "online" and state.pages.builds == builds  # shared

    status("offline")  # the agent's last will, as the broker would send it
    eventually(lambda: stored_state() == "offline", "ingest stores loa-1 offline")
    assert listed()["loa-1"] == "offline" and state.pages.builds == builds + 1
    html = client.get("/", params={"group": "thon-1"}, headers={"accept": "text/html"}).text
    row = html[html.index('id="device-loa-1"') :].split("</tr>", 1)[0]
    assert "Mất kết nối" in row and "state-offline" in row
