"""The live pages' feed: its pure rules, one poll for any number of pages, and /live.

The rules (controller/fleet/live_rules.py) exhaustively on small cases; the
feed (controller/fleet/live.py) on a real migrated database, SQLite and
PostgreSQL, its subscribers on a real asyncio loop; the endpoint under
uvicorn, read as a browser's EventSource reads it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from controller.db.broadcast_tables import BroadcastAckRow, BroadcastRow
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import Alert, Device, DeviceState, EventRecord
from controller.fleet.live import LiveFeed, Subscription
from controller.fleet.live_rules import OnAir, PlayMark, changes, fold_plays, on_air
from tests.broadcast_api_helpers import Ctl
from tests.http_helpers import serve

NOW = 1_800_000_000_000
OFFLINE_MS = 600_000


def mark(device: str, ts: int, row: int, type_: str, key: str = "k", *, prio: int = 2) -> PlayMark:
    return PlayMark(device, ts, row, type_, key, prio, f"label {key}")


# the rules


def test_the_latest_record_says_what_plays_whatever_order_they_come_in() -> None:
    preempted = [
        mark("loa-1", 100, 1, "play.started", "sang"),
        mark("loa-1", 200, 2, "play.finished", "sang"),  # cut by the emergency...
        mark("loa-1", 200, 3, "play.started", "bao", prio=9),  # ...that starts the same ms
        mark("loa-1", 300, 4, "play.finished", "bao", prio=9),
        mark("loa-1", 300, 5, "play.started", "sang"),  # the rest resumes
    ]
    for upto, key in ((1, "sang"), (3, "bao"), (5, "sang")):
        for marks in (preempted[:upto], list(reversed(preempted[:upto]))):
            latest = fold_plays({}, marks)
            assert on_air(latest, {"loa-1"})["loa-1"].key == key
    assert on_air(fold_plays({}, preempted[:4]), {"loa-1"}) == {}
    latest = fold_plays({}, preempted)
    assert fold_plays(latest, preempted[:2]) == latest  # repeats and older records change nothing
    assert on_air(latest, set()) == {}  # offline: nothing we can vouch for
    zero = [mark("loa-2", 50, 7, "play.started"), mark("loa-2", 50, 8, "play.finished")]
    assert on_air(fold_plays({}, reversed(zero)), {"loa-2"}) == {}
    assert on_air(fold_plays({}, [mark("loa-3", 9, 9, "play.interrupted")]), {"loa-3"}) == {}


def test_levels_and_what_changed() -> None:
    levels = [OnAir("k", "", p, 0).level for p in range(10)]
    assert levels == ["normal"] * 4 + ["priority"] * 3 + ["emergency"] * 3
    bad = PlayMark.of("loa-1", 1, 1, "play.started", {"priority": "9", "label": 5})
    assert (bad.priority, bad.label, bad.key) == (0, "", "")
    assert changes({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"b": 3, "c": 4}
    assert changes({"a": 1}, {}) == {"a": None}
    assert changes({}, {}) == {}


# the feed on a database


@pytest.fixture
def feed(database_url: str) -> Iterator[tuple[LiveFeed, Any]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    with sessions.begin() as db:
        for i in range(1, 4):
            db.add(Device(id=f"loa-{i}", roles=["speaker"], last_seen_ms=NOW - 1000))
        db.flush()
        for i in range(1, 4):
            db.add(DeviceState(device_id=f"loa-{i}", state="online", changed_ms=NOW))
    clock = [NOW]
    yield LiveFeed(sessions, offline_after_ms=OFFLINE_MS, clock_ms=lambda: clock[0]), sessions
    engine.dispose()


def delivered(loop: asyncio.AbstractEventLoop, sub: Subscription) -> dict[tuple[str, str], Any]:
    loop.run_until_complete(asyncio.sleep(0))  # the poll's hand-over runs on the page's loop
    return sub.take()


def test_one_poll_serves_every_page_and_tells_only_what_changed(
    feed: tuple[LiveFeed, Any],
) -> None:
    live, sessions = feed
    loop = asyncio.new_event_loop()
    try:
        one = live.subscribe(loop, frozenset({"loa-1"}))
        many = [live.subscribe(loop) for _ in range(50)]
        statements: list[str] = []
        event.listen(
            sessions.kw["bind"], "before_cursor_execute",
            lambda *args: statements.append(args[2]),
        )  # fmt: skip

        def poll() -> None:
            statements.clear()
            live.poll()
            assert len(statements) <= 6, statements  # per pass, whatever the number of pages

        poll()
        got = delivered(loop, one)
        assert got[("counts", "")] == {"online": 3, "offline": 0, "unknown": 0, "alerting": 0}
        assert {k for k in got if k[0] == "device"} == {("device", "loa-1")}  # only its own
        assert all(("device", "loa-2") in delivered(loop, s) for s in many[:1])

        # nothing new: nothing sent
        poll()
        assert delivered(loop, one) == {}

        # loa-1 says offline, loa-2 raises an alert and plays an emergency, a command is acked
        with sessions.begin() as db:
            db.get(DeviceState, "loa-1").state = "offline"
            db.add(Alert(kind="temp.high", device_id="loa-2", severity="warning",
                         raised_ms=NOW, message_vi="Nóng", message_en="Hot"))  # fmt: skip
            db.add(EventRecord(device_id="loa-2", event_id="e1", type="play.started",
                               ts_ms=NOW, received_ms=NOW,
                               body={"key": "bao", "priority": 9, "label": "Bão"}))  # fmt: skip
            db.add(BroadcastRow(id="c" * 32, kind="volume", targets=[], level="normal",
                                priority=0, label="", created_by="t", created_ms=NOW,
                                status="sent", devices=["loa-2", "loa-3"]))  # fmt: skip
            db.flush()  # an ack makes its own row; loa-3 has not answered
            db.add(BroadcastAckRow(broadcast_id="c" * 32, device="loa-2", ok=True, acked_ms=NOW))
        poll()
        got = delivered(loop, one)
        assert got[("device", "loa-1")].state == "offline"
        assert got[("counts", "")]["alerting"] == 1 and got[("counts", "")]["offline"] == 1
        assert got[("onair", "loa-2")] == OnAir("bao", "Bão", 9, NOW)
        loa_2, loa_3 = got[("command", "c" * 32)].acks
        assert (loa_2.device, loa_2.ok) == ("loa-2", True)
        assert (loa_3.device, loa_3.ok, loa_3.error) == ("loa-3", None, None)  # still waiting
        wide = delivered(loop, many[0])
        assert wide[("device", "loa-2")].alerts == ("temp.high",)

        # time passes: loa-3 goes quiet past the limit; the emergency ends
        with sessions.begin() as db:
            db.add(EventRecord(device_id="loa-2", event_id="e2", type="play.finished",
                               ts_ms=NOW + 5, received_ms=NOW + 5,
                               body={"key": "bao", "priority": 9}))  # fmt: skip
            db.get(Device, "loa-2").last_seen_ms = NOW + OFFLINE_MS
        live.clock_ms = lambda: NOW + OFFLINE_MS
        poll()
        got = delivered(loop, many[1])
        assert got[("device", "loa-3")].state == "offline"
        assert got[("onair", "loa-2")] is None
    finally:
        loop.close()


def test_the_loop_idles_without_pages_and_a_page_that_joins_gets_everything(
    feed: tuple[LiveFeed, Any],
) -> None:
    live, _sessions = feed
    live.poll_s = 0.05
    loop = asyncio.new_event_loop()
    try:
        with live.running():
            time.sleep(0.3)
            assert live.passes == 0  # nobody listens: no query at all
            first = live.subscribe(loop)
            deadline = time.monotonic() + 30
            while live.passes < 2:
                assert time.monotonic() < deadline, "the feed did not poll"
                time.sleep(0.02)
            assert ("device", "loa-3") in delivered(loop, first)
            late = live.subscribe(loop)  # the loop runs: the current state at once
            assert len([k for k in delivered(loop, late) if k[0] == "device"]) == 3
        assert first.closed and late.closed  # the app stops: the streams end
    finally:
        loop.close()


# the endpoint


def test_live_streams_events_to_a_signed_in_viewer_and_refuses_bad_input(offline: Ctl) -> None:
    offline.app.state.xaso.fleet.sync_registry()
    with serve(offline.app) as url:
        bearer = {"Authorization": f"Bearer {offline.tokens['officer']}"}
        assert httpx.get(f"{url}/live", timeout=30).status_code == 401
        bad = httpx.get(f"{url}/live", params={"devices": "loa-1,../x"}, headers=bearer)
        assert bad.status_code == 422 and bad.json()["vi"]
        many = ",".join(f"loa-{i}" for i in range(501))
        assert httpx.get(f"{url}/live?devices={many}", headers=bearer).status_code == 422
        with httpx.stream(
            "GET", f"{url}/live", params={"devices": "loa-1"}, headers=bearer, timeout=60
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            seen: dict[str, Any] = {}
            lines = stream.iter_lines()
            name = ""
            while "device" not in seen or "counts" not in seen:
                line = next(lines)
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    seen[name] = json.loads(line[6:])
        assert seen["device"] == {
            "id": "loa-1", "state": "unknown", "state_text": "Chưa kết nối lần nào", "alerts": [],
        }  # fmt: skip
        assert seen["counts"]["unknown"] == 4  # the registry: three speakers and a kiosk

        # more open pages than the database pool has connections (5 + 10): none holds one
        opened = threading.Barrier(21)
        done = threading.Event()

        def page() -> None:
            with httpx.stream("GET", f"{url}/live", headers=bearer, timeout=60) as s:
                next(s.iter_lines())
                opened.wait(60)
                done.wait(60)

        pages = [threading.Thread(target=page) for _ in range(20)]
        for p in pages:
            p.start()
        try:
            opened.wait(60)
            answer = httpx.get(f"{url}/api/devices", headers=bearer, timeout=20)
            assert answer.status_code == 200 and answer.json()["total"] == 4
            assert offline.app.state.xaso.engine.pool.checkedout() <= 3  # the background loops
        finally:
            done.set()
            for p in pages:
                p.join(60)
