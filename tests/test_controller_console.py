"""The technician's console over the API: volume, test tone and restart reach a real agent.

The app (create_app, its lifespan running) on SQLite and on PostgreSQL, its
station connected to a real Mosquitto; a speaker agent in its own process
with a WAV sink. Each command's ack comes back through the controller's own
ingest and shows on the command; the tone is heard in the recording; the
restart makes the agent exit for systemd to start it again. Roles, bad input
and the missing confirmation are refused, and every command is audited.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.site.directory import Site
from tests.audio_helpers import dominant_hz, read_samples
from tests.broadcast_api_helpers import Ctl, group, make_app, refused
from tests.controller_process import until


@pytest.fixture
def online(tmp_path: Path, database_url: str, site: Site, broker: Any) -> Iterator[Ctl]:
    app = make_app(tmp_path, database_url, site, broker.port)
    ctl = Ctl(app, tmp_path)
    with ctl.client:
        deadline = time.monotonic() + 30
        while not ctl.station.connected:
            assert time.monotonic() < deadline, "the station did not connect"
            time.sleep(0.05)
        yield ctl
    app.state.xaso.engine.dispose()


def device(name: str) -> list[dict[str, str]]:
    return [{"kind": "device", "id": name}]


def answered(ctl: Ctl, command_id: str) -> dict[str, Any]:
    """The command once every speaker it reached has answered."""

    def check() -> Any:
        got = ctl.call("technician", "GET", f"/api/commands/{command_id}").json()
        return got if all(a["ok"] is not None for a in got["acks"]) else None

    found: dict[str, Any] = until(f"the answers to {command_id}", check)
    return found


def recordings(played: Path) -> list[dict[str, Any]]:
    log = played / "played.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_volume_tone_and_restart_reach_the_agent_and_its_acks_show(
    online: Ctl, fleet: Any, probe: Any, tmp_path: Path
) -> None:
    played = tmp_path / "played"
    agent = fleet.spawn("loa-1", sections={"speaker": {"sink": "wav", "wav_dir": str(played)}})
    probe.status_is("loa-1", "online", timeout=60)
    tech = "technician"

    made = online.call(tech, "POST", "/api/commands/volume",
                       json={"targets": device("loa-1"), "volume_pct": 35})  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["kind"] == "volume" and made.json()["acks"][0]["device"] == "loa-1"
    volume = answered(online, made.json()["id"])
    assert volume["status"] == "acked" and volume["acks"][0]["ok"] is True
    ack = probe.ack_for("loa-1", volume["id"])
    assert ack["result"] == {"volume_pct": 35}  # what the agent itself said

    # a tone for thon-1 reaches loa-1 (running) and loa-3 (not started: it never answers)
    tone = online.call(tech, "POST", "/api/commands/test-tone",
                       json={"targets": group("thon-1"), "frequency_hz": 700,
                             "duration_s": 1.0})  # fmt: skip
    assert tone.status_code == 201, tone.text
    assert [a["device"] for a in tone.json()["acks"]] == ["loa-1", "loa-3"]
    tone_id = tone.json()["id"]
    (rec,) = until("the tone is played", lambda: recordings(played))
    assert rec["key"] == tone_id
    rate, samples = read_samples(played / rec["file"])
    assert abs(dominant_hz(samples, rate) - 700) < 10
    got = until(
        "loa-1's ack of the tone",
        lambda: (
            (c := online.call(tech, "GET", f"/api/commands/{tone_id}").json())["acks"][0]["ok"]
            and c
        ),
    )
    assert got["status"] == "sent" and got["acks"][1] == {**got["acks"][1], "ok": None}

    # the restart asks for its confirmation, then the agent acks and exits for systemd
    refused(online.call(tech, "POST", "/api/commands/restart",
                        json={"targets": device("loa-1")}), 422)  # fmt: skip
    restart = online.call(tech, "POST", "/api/commands/restart",
                          json={"targets": device("loa-1"), "confirm": True})  # fmt: skip
    assert restart.status_code == 201, restart.text
    assert answered(online, restart.json()["id"])["status"] == "acked"
    assert agent.proc.wait(30) == 75

    listed = online.call("officer", "GET", "/api/commands").json()
    assert [c["kind"] for c in listed] == ["restart", "tone", "volume"]
    assert online.call("officer", "GET", "/api/broadcasts").json() == []  # not broadcasts
    refused(online.call("officer", "GET", f"/api/broadcasts/{tone_id}"), 404)
    actions = [(e.action, e.target, e.actor_name) for e in online.audit()]
    assert actions[-3:] == [
        ("device.volume", "device:loa-1", "technician (token technician-token)"),
        ("device.test_tone", "group:thon-1", "technician (token technician-token)"),
        ("device.restart", "device:loa-1", "technician (token technician-token)"),
    ]


def test_who_may_send_and_what_is_refused(online: Ctl) -> None:
    body = {"targets": device("loa-1"), "volume_pct": 50}
    for role in ("broadcaster", "officer"):
        refused(online.call(role, "POST", "/api/commands/volume", json=body), 403)
        refused(online.call(role, "POST", "/api/commands/test-tone",
                            json={"targets": device("loa-1")}), 403)  # fmt: skip
    assert online.call("admin", "POST", "/api/commands/volume", json=body).status_code == 201
    tech = "technician"
    for bad in (
        {**body, "volume_pct": 101},
        {**body, "volume_pct": "50%"},
        {**body, "targets": []},
        {**body, "extra": 1},
    ):
        refused(online.call(tech, "POST", "/api/commands/volume", json=bad), 422)
    refused(online.call(tech, "POST", "/api/commands/test-tone",
                        json={"targets": device("loa-1"), "duration_s": 61}), 422)  # fmt: skip
    refused(
        online.call(tech, "POST", "/api/commands/volume", json={**body, "targets": device("x")}),
        422, "unknown_target",
    )  # fmt: skip
    # a kiosk is no speaker: the console's commands are for speakers
    refused(online.call(tech, "POST", "/api/commands/volume",
                        json={**body, "targets": device("kiosk-1")}), 422)  # fmt: skip
    refused(online.call(tech, "GET", "/api/commands/" + "0" * 32), 404)
    before = len(online.audit())
    online.call(tech, "POST", "/api/commands/volume", json={**body, "volume_pct": -1})
    assert len(online.audit()) == before  # nothing refused is audited
