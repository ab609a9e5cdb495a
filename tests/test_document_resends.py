"""Self-healing documents on both databases: the resender against real rows (two replicas,
one resend per device and one publish per topic, backoff, audit), then end to end: a
real Mosquitto, the controller's app with its services, and a real agent that lost the
newest schedule, brought to it with no operator while the dashboard shows it behind."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session, sessionmaker

from controller.app import create_app
from controller.db.auth_tables import AuditEntry
from controller.db.engine import make_engine, session_factory, upgrade
from controller.db.fleet_tables import BehindDevice
from controller.fleet.behind_rules import Behind, ResendPolicy
from controller.fleet.ingest_writes import Item, sync_devices_from_site, write_batch
from controller.radio.resends import Resends
from controller.settings import load_settings
from controller.site.directory import Site
from controller.site.documents import sign_next
from protocol.commands import ScheduleSet
from protocol.uplink import Status
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import CHEAP, Ctl, entry, register

NOW = 1_800_000_000_000
S = 1000
AFTER = 120 * S
GROUP = "xaso/grp/thon-1/schedule"
EVERYONE = "xaso/grp/all/schedule"
SETTLE_S = 90  # how long a condition may take to come true before the test fails


def until(what: str, check: Any, timeout: float = SETTLE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


class Recorder:
    """A publisher that keeps what it was given; ``fail`` makes it refuse like a broker away."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []
        self.fail = False

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s=10
    ) -> None:
        if self.fail:
            raise ConnectionError("the broker did not answer")
        self.sent.append((topic, payload, retain))


@pytest.fixture
def sessions(database_url: str, site: Site) -> Iterator[sessionmaker[Session]]:
    register(site)
    upgrade(database_url)
    engine = make_engine(database_url)
    made = session_factory(engine)
    with made.begin() as session:
        sync_devices_from_site(site, session, NOW)
    yield made
    engine.dispose()


def sign(sessions: sessionmaker[Session], site: Site, topic: str, at_ms: int) -> int:
    with sessions.begin() as session:
        signed = sign_next(
            session,
            topic,
            "schedule.set",
            build=lambda v, _last: ScheduleSet(version=v),
            key=site.signing_key(),
            now_ms=at_ms,
        )
    return signed.version


def report(
    sessions: sessionmaker[Session],
    device: str,
    at_ms: int,
    held: dict[str, int] | None = None,
    state: str = "online",
) -> None:
    """The device's status, through ingest's own writer: what it holds, by topic."""
    status = Status(state=state, ts=at_ms, documents=held or {})  # type: ignore[arg-type]
    with sessions.begin() as session:
        write_batch(session, [Item(device, "status", status, at_ms)], at_ms)


def resend_audit(sessions: sessionmaker[Session]) -> list[AuditEntry]:
    with sessions() as session:
        query = sa.select(AuditEntry).where(AuditEntry.action == "document.resend")
        return list(session.scalars(query.order_by(AuditEntry.id)))


def test_two_replicas_resend_once_per_device_and_each_topic_once(
    sessions: sessionmaker[Session], site: Site
) -> None:
    version = sign(sessions, site, GROUP, NOW - 3600 * S)
    everyone = sign(sessions, site, EVERYONE, NOW - 3600 * S)
    report(sessions, "loa-1", NOW, {EVERYONE: everyone})  # thon-1's: none
    report(sessions, "loa-3", NOW, {GROUP: 1, EVERYONE: 0})
    report(sessions, "loa-2", NOW, state="offline")  # behind on "all", but away
    policy = ResendPolicy(after_ms=AFTER, offline_after_ms=3600 * S)
    wires = Recorder(), Recorder()
    a, b = (Resends(sessions, site, w, policy, clock=lambda: NOW) for w in wires)

    assert a.run(NOW) == {}  # first seen behind: remembered, not yet resent
    later = NOW + AFTER
    plan_a, memory_a = a.survey(later)  # both replicas read before either claims
    plan_b, memory_b = b.survey(later)
    assert sorted(plan_a.due) == sorted(plan_b.due) == ["loa-1", "loa-3"]
    won = a.claim(plan_a, memory_a, later)
    assert b.claim(plan_b, memory_b, later) == {}  # the other replica counted them first
    done = a.send(won, later)
    assert done == {
        "loa-1": [Behind(GROUP, "schedule", "thon-1", 0, version)],
        "loa-3": [
            Behind(EVERYONE, "schedule", "all", 0, everyone),
            Behind(GROUP, "schedule", "thon-1", 1, version),
        ],
    }
    assert [(t, r) for t, _p, r in wires[0].sent] == [(EVERYONE, True), (GROUP, True)]
    assert wires[1].sent == []
    kept = {t: p for t, p, _r in wires[0].sent}  # byte for byte what was signed
    assert json.loads(kept[GROUP])["body"]["version"] == version
    entries = resend_audit(sessions)
    assert [(e.target, e.actor_name, e.actor_kind) for e in entries] == [
        ("device:loa-1", "controller", "system"),
        ("device:loa-3", "controller", "system"),
    ]
    assert entries[0].details == {"documents": [{"topic": GROUP, "held": 0, "current": version}]}

    # loa-1 caught up and is forgotten; loa-3 still behind: again after the grace, then 2x
    report(sessions, "loa-1", later + S, {GROUP: version, EVERYONE: everyone})
    report(sessions, "loa-3", later + S, {GROUP: 1, EVERYONE: everyone})
    assert a.run(later + AFTER - 1) == {}
    with sessions() as session:
        assert [m.device_id for m in session.scalars(sa.select(BehindDevice))] == ["loa-3"]
    assert list(a.run(later + AFTER)) == ["loa-3"]
    assert a.run(later + 3 * AFTER - 1) == {} and list(a.run(later + 3 * AFTER)) == ["loa-3"]
    with sessions() as session:
        (memory,) = session.scalars(sa.select(BehindDevice))
        assert (memory.device_id, memory.resends) == ("loa-3", 3)


def test_a_broker_that_fails_sends_nothing_and_records_no_resend(
    sessions: sessionmaker[Session], site: Site
) -> None:
    sign(sessions, site, GROUP, NOW - 3600 * S)
    report(sessions, "loa-1", NOW)
    wire = Recorder()
    resends = Resends(sessions, site, wire, ResendPolicy(after_ms=AFTER), clock=lambda: NOW)
    resends.run(NOW)
    wire.fail = True
    assert resends.run(NOW + AFTER) == {}
    assert wire.sent == [] and resend_audit(sessions) == []
    wire.fail = False  # the claim counted: the next try waits its backoff, then sends
    assert resends.run(NOW + 2 * AFTER - 1) == {}
    assert list(resends.run(NOW + 2 * AFTER)) == ["loa-1"] and len(wire.sent) == 1


# end to end


class Ahead:
    """The app's clock: the wall clock, plus however far the test has moved it on."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@pytest.fixture
def online(
    tmp_path: Path, database_url: str, site: Site, broker: Any
) -> Iterator[tuple[Ctl, Ahead]]:
    """The app and its services on a real Mosquitto; nothing is resent within the hour."""
    config = tmp_path / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{site.dir}"\nclips_dir = "{tmp_path / "clips"}"\n'
        f'[database]\nurl = "{database_url}"\n[mqtt]\nport = {broker.port}\n'
        "[alerts]\noffline_after_min = 1440\n"  # still online when the clock moves on
        "[documents]\ncheck_every_s = 0.2\nresend_after_s = 3600\n",
        encoding="utf-8",
    )
    clock = Ahead()
    app = create_app(load_settings(config), clock=clock)
    ctl = Ctl(app, tmp_path)
    with ctl.client:
        until("the station connects", lambda: ctl.station.connected, 30)
        yield ctl, clock
    app.state.xaso.engine.dispose()


def forget_session(site: Site, broker: Any, device: str) -> None:
    """Connect once as the device with a clean session: the broker drops what it queued."""
    mqtt = tomllib.loads(site.device_config_path(device).read_text())["mqtt"]
    done = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"xaso-{device}", clean_session=True)
    done.username_pw_set(mqtt["username"], mqtt["password"])
    connected: list[bool] = []
    done.on_connect = lambda *args: connected.append(not args[3].is_failure)
    done.connect(broker.host, broker.port)
    done.loop_start()
    until("the clean session connects", lambda: connected, 20)
    assert connected == [True]
    done.disconnect()
    done.loop_stop()


def test_a_speaker_that_lost_the_newest_schedule_gets_it_with_no_operator(
    online: tuple[Ctl, Ahead], fleet: Any, probe: Any, site: Site, broker: Any
) -> None:
    ctl, clock = online
    own = "xaso/dev/loa-1/schedule"
    speaker = {"speaker": {"sink": "wav", "wav_dir": str(ctl.tmp / "played")}}
    agent = fleet.spawn("loa-1", sections=speaker)
    probe.status_is("loa-1", "online", timeout=60)
    clip = ctl.upload("broadcaster", tone_file(ctl.tmp / "tone.wav", 440, 1.0), "Bản tin")
    assert clip.status_code == 201, clip.text
    target = {"kind": "device", "id": "loa-1"}
    made = ctl.call("broadcaster", "POST", "/api/schedules",
                    json=entry(clip.json()["sha256"], target=target))  # fmt: skip
    assert made.status_code == 201, made.text

    def device() -> dict[str, Any]:
        answer = ctl.call("officer", "GET", "/api/devices/loa-1")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def version_on_wire() -> int:
        versions = [m.json()["body"]["version"] for m in probe.on(own) if m.payload]
        return versions[-1] if versions else 0

    first = until("the first schedule is signed", version_on_wire)
    until("the speaker holds it", lambda: device()["behind"] == [] and device()["state"])

    # the speaker is away while the schedule changes, and the broker loses the new copy
    assert agent.terminate() == 0
    forget_session(site, broker, "loa-1")
    changed = ctl.call("broadcaster", "PUT", f"/api/schedules/{made.json()['id']}",
                       json={**entry(clip.json()["sha256"], target=target, label="Bản tin trưa"),
                             "expected_version": 1})  # fmt: skip
    assert changed.status_code == 200, changed.text
    current = until("the new schedule is signed", lambda: (v := version_on_wire()) > first and v)
    probe.publish(own, b"", retain=True)  # the retained copy is gone
    back = int(time.time() * 1000)
    fleet.spawn("loa-1", sections=speaker)
    probe.status_is("loa-1", "online", after=back, timeout=60)

    # the dashboard and the API say it is behind, in Vietnamese first
    lagging = {"topic": own, "leaf": "schedule", "group": None, "held": first, "current": current}
    until("the API shows it behind", lambda: device()["behind"] == [lagging])
    # the resender has seen it too: from then on its grace runs
    until("the resender sees it behind", lambda: device()["behind_since_ms"])
    page = ctl.call("officer", "GET", "/")
    assert f"Lịch phát cũ (phiên bản {first}, hiện tại {current})" in page.text
    english = ctl.call("officer", "GET", "/devices/loa-1", params={"lang": "en"})
    assert f"Old schedule (version {first}, current {current})" in english.text
    assert resend_audit(ctl.app.state.xaso.sessions) == []  # within the grace: not yet

    # time passes: the controller resends the current document by itself
    clock.offset_s = 2 * 3600
    until("it holds the current schedule", lambda: device()["behind"] == [], 120)
    until("the resender forgets it, caught up", lambda: device()["behind_since_ms"] is None)
    ack = probe.wait_for(
        lambda m: (
            m.topic == "xaso/dev/loa-1/ack"
            and (m.json().get("result") or {}).get("version") == current
        ),
        timeout=60,
    )
    assert ack.json()["ok"] is True
    (resent,) = resend_audit(ctl.app.state.xaso.sessions)
    assert resent.target == "device:loa-1" and resent.details == {
        "documents": [{"topic": own, "held": first, "current": current}]
    }
    fresh = fleet.probe()  # the retained copy is back on the broker too
    kept = fresh.wait_for(lambda m: m.topic == own and m.retain and bool(m.payload))
    assert kept.json()["body"]["version"] == current
    page = ctl.call("officer", "GET", "/devices/loa-1", params={"lang": "vi"})
    assert "Đã nhận bản mới nhất" in page.text and "Lịch phát cũ" not in page.text
