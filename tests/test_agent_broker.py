"""The agent against a real Mosquitto with passwords and an ACL (issue: foundation)."""

from __future__ import annotations

import json
import socket
import threading
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.agent import Agent
from edge.config import load_config
from protocol.envelope import seal
from protocol.events import PlayMissed
from protocol.uplink import Telemetry
from tests.signing_helpers import resign, tamper


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_kill9_sends_the_will_and_restart_comes_back_online(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    killed_at = now_ms()
    agent.kill9()
    status = probe.wait_for(
        lambda m: m.topic == "xaso/dev/loa-1/status" and m.json()["state"] == "offline"
    )
    assert status.json()["roles"] == ["speaker"]
    agent.start()
    probe.status_is("loa-1", "online", after=killed_at)
    # the retained status a newcomer reads is online
    late = fleet.probe()
    late.status_is("loa-1", "online", after=killed_at)
    late.close()


def test_sigterm_says_offline_before_leaving(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    t = now_ms()
    assert agent.terminate() == 0
    probe.status_is("loa-1", "offline", after=t)
    assert "Traceback" not in agent.output()


def test_restart_agent_command_acks_then_exits_for_systemd(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    probe.publish(
        "xaso/dev/loa-1/cmd",
        fleet.seal("device.restart_agent", {}, cmd_id="r1", to="xaso/dev/loa-1/cmd"),
    )
    assert probe.ack_for("loa-1", "r1")["ok"]
    assert agent.proc.wait(20) == 75


def test_telemetry_carries_the_contract_fields(fleet, probe):
    fleet.spawn("loa-1", telemetry_interval_s=1)
    msg = probe.wait_for(lambda m: m.topic == "xaso/dev/loa-1/telemetry")
    sample = msgspec.convert(msg.json(), Telemetry)
    assert sample.uptime_s > 0 and sample.disk_free_mb and sample.mem_used_pct is not None
    assert sample.agent and sample.outbox_len >= 0
    assert sample.clock.synced in (True, False, "unknown")


def spoiled_payloads(fleet):
    """One payload per refusal reason of PROTOCOL.md, on the cmd topic."""
    key, other = fleet.key, fleet.other_key
    t = now_ms()
    ok = json.loads(seal("device.ping", {}, key, t, to="xaso/dev/loa-1/cmd"))

    def c(cid, **changes):
        return resign({**ok, "id": cid, **changes}, key)

    return {
        "too_large": b'{"id":"big","pad":"' + b"x" * 300_000 + b'"}',
        "not_json": b"\x00\xffnot json at all",
        "unknown_version": c("c-ver", v=7),
        "unknown_type": c("c-type", type="device.self_destruct"),
        "bad_signature": tamper(c("c-sig"), ts=t + 1),
        "unknown_kid": resign({**ok, "id": "c-kid", "kid": other.kid}, other),
        "expired": c("c-exp", ts=t - 120_000, exp=t - 60_000),
        "from_future": c("c-fut", ts=t + 600_000, exp=t + 700_000),
        "bad_body": c("c-body", type="device.volume", body={"volume_pct": "loud"}),
        "bad_envelope": b'{"v":1,"id":"c-env"}',
    }


def test_every_refusal_gets_an_ack_and_the_agent_keeps_going(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    cmd = "xaso/dev/loa-1/cmd"
    cases = spoiled_payloads(fleet)
    for payload in cases.values():
        probe.publish(cmd, payload)
    # replay: the same valid command twice
    ping = fleet.seal("device.ping", {}, cmd_id="p-replay", to=cmd)
    probe.publish(cmd, ping)
    probe.publish(cmd, ping)
    # rollback: a config older than the one held
    cfg = "xaso/dev/loa-1/config"
    probe.publish(
        cfg,
        fleet.seal("config.set", {"version": 5, "telemetry_interval_s": 5}, cmd_id="cfg-5", to=cfg),
        retain=True,
    )
    probe.publish(
        cfg,
        fleet.seal("config.set", {"version": 4, "telemetry_interval_s": 5}, cmd_id="cfg-4", to=cfg),
    )
    probe.publish(cmd, fleet.seal("device.ping", {}, cmd_id="after", to=cmd))
    assert probe.ack_for("loa-1", "after")["ok"]

    acks = [m.json() for m in probe.on("xaso/dev/loa-1/ack")]
    reasons = {a["error"] for a in acks if not a["ok"]}
    assert set(cases) | {"replay", "rollback"} <= reasons
    assert probe.ack_for("loa-1", "cfg-5")["ok"]
    assert probe.ack_for("loa-1", "cfg-4")["error"] == "rollback"
    assert probe.ack_for("loa-1", "c-exp")["error"] == "expired"
    assert all(a["detail"] for a in acks if not a["ok"])
    # counted in telemetry, by reason
    probe.publish(cmd, fleet.seal("device.ping", {}, cmd_id="last", to=cmd))
    probe.ack_for("loa-1", "last")
    sample = probe.wait_for(
        lambda m: m.topic == "xaso/dev/loa-1/telemetry" and "rollback" in m.json()["refused"],
        timeout=30,
    ).json()
    assert sample["refused"]["rollback"] == 1 and sample["refused"]["replay"] == 1
    assert sample["refused"]["bad_signature"] == 1 and sample["refused"]["not_json"] == 1
    assert agent.alive


def test_a_message_signed_for_another_target_is_refused_and_acked(fleet, probe):
    """Re-published by someone with publish rights on the real broker, with the site's ACL."""
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    # a command signed for loa-2, re-published on loa-1's topic
    for_b = fleet.seal("device.ping", {}, cmd_id="for-b", to="xaso/dev/loa-2/cmd")
    probe.publish("xaso/dev/loa-1/cmd", for_b)
    ack = probe.ack_for("loa-1", "for-b")
    assert not ack["ok"] and ack["error"] == "wrong_target" and "dev/loa-2/cmd" in ack["detail"]
    # thon-2's schedule, re-published on thon-1's topic (loa-1 is in thon-1)
    thon2 = fleet.seal(
        "schedule.set", {"version": 5}, cmd_id="sch-thon-2", to="xaso/grp/thon-2/schedule"
    )
    probe.publish("xaso/grp/thon-1/schedule", thon2)
    ack = probe.ack_for("loa-1", "sch-thon-2")
    assert not ack["ok"] and ack["error"] == "wrong_target"
    # a device's command on its group's topic
    own = fleet.seal("device.ping", {}, cmd_id="own-on-grp", to="xaso/dev/loa-1/cmd")
    probe.publish("xaso/grp/thon-1/cmd", own)
    assert probe.ack_for("loa-1", "own-on-grp")["error"] == "wrong_target"
    # the right ones are obeyed; nothing was answered for the refused ones but the refusal
    probe.publish(
        "xaso/dev/loa-1/cmd", fleet.seal("device.ping", {}, cmd_id="ok", to="xaso/dev/loa-1/cmd")
    )
    assert probe.ack_for("loa-1", "ok")["ok"]
    acks = [m.json() for m in probe.on("xaso/dev/loa-1/ack")]
    assert [a["ok"] for a in acks if a.get("cmd") in ("for-b", "sch-thon-2", "own-on-grp")] == [
        False
    ] * 3
    assert probe.on("xaso/dev/loa-2/ack") == []
    assert agent.alive


def test_payloads_that_are_not_utf8_are_acked_without_a_traceback(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    cmd = "xaso/dev/loa-1/cmd"
    good = json.loads(fleet.seal("device.ping", {}, cmd_id="u-good", to=cmd))
    bad = {
        "lone surrogate in the id": json.dumps({**good, "id": "u-\ud800"}).encode(),
        "lone surrogate elsewhere": json.dumps({**good, "kid": "\udfff"}).encode(),
        "utf-16": json.dumps(good).encode("utf-16"),
        "utf-32": json.dumps(good).encode("utf-32"),
        "utf-8 bom": b"\xef\xbb\xbf" + json.dumps(good).encode(),
    }
    for payload in bad.values():
        probe.publish(cmd, payload)
    probe.publish(cmd, fleet.seal("device.ping", {}, cmd_id="u-after", to=cmd))
    assert probe.ack_for("loa-1", "u-after")["ok"]
    acks = [m.json() for m in probe.on("xaso/dev/loa-1/ack")]
    refused = [a for a in acks if not a["ok"]]
    assert len(refused) == len(bad) and {a["error"] for a in refused} == {"not_json"}
    assert [a.get("cmd") for a in refused].count("u-good") == 1  # the clean id, where one was read
    assert not any(a["ok"] and a.get("cmd") == "u-good" for a in acks)
    assert agent.alive and "Traceback" not in agent.output()


@pytest.mark.slow
def test_fuzzed_command_topic_leaves_the_agent_answering(fleet, probe):
    agent = fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    cmd = "xaso/dev/loa-1/cmd"
    base = json.loads(fleet.seal("device.volume", {"volume_pct": 40}, to=cmd))
    sent = []

    json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    json_any = st.recursive(
        json_leaf,
        lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=6), i, max_size=3),
        max_leaves=10,
    )
    mutated = st.builds(
        lambda k, v: json.dumps({**base, k: v}).encode(),
        st.sampled_from([*base.keys(), "extra"]),
        json_any,
    )
    payloads = st.one_of(st.binary(max_size=600), mutated, st.text(max_size=200).map(str.encode))

    @settings(
        max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(payloads)
    def fuzz(payload):
        probe.client.publish(cmd, payload, qos=0)
        sent.append(payload)

    fuzz()
    assert len(sent) >= 2000
    probe.publish(cmd, fleet.seal("device.ping", {}, cmd_id="still-there", to=cmd))
    assert probe.ack_for("loa-1", "still-there", timeout=60)["ok"]
    assert agent.alive
    acks = probe.on("xaso/dev/loa-1/ack")
    assert len(acks) >= 1000  # almost every fuzzed payload was answered with a refusal
    assert "Traceback" not in agent.output()


def test_acl_holds_for_a_real_agent_identity(fleet, probe):
    """A device's credentials reach its own topics only (the site's ACL, real broker)."""
    fleet.spawn("loa-1")
    probe.status_is("loa-1", "online")
    intruder = fleet.probe(as_device="loa-2", subscribe="xaso/dev/loa-1/cmd")
    intruder.client.publish(
        "xaso/dev/loa-1/status", b'{"state":"offline","ts":1}', qos=1, retain=True
    )
    intruder.publish("xaso/dev/loa-2/event", b'{"id":"marker","type":"agent.started","ts":1}')
    probe.wait_for(lambda m: m.topic == "xaso/dev/loa-2/event")
    probe.publish(
        "xaso/dev/loa-1/cmd", fleet.seal("device.ping", {}, cmd_id="mine", to="xaso/dev/loa-1/cmd")
    )
    probe.ack_for("loa-1", "mine")
    assert intruder.on("xaso/dev/loa-1/cmd") == []
    forged = [m for m in probe.on("xaso/dev/loa-1/status") if m.json()["ts"] == 1]
    assert forged == []
    intruder.close()


class CountingListener:
    """Stands where the broker was and counts connection attempts."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.count = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._t.join()
        self.sock.close()


@pytest.mark.slow
def test_broker_outage_of_30s_loses_nothing_and_duplicates_nothing(fleet, probe, broker):
    cfg_topic = "xaso/dev/loa-1/config"
    probe.publish(
        cfg_topic,
        fleet.seal("config.set", {"version": 1}, cmd_id="cfg-1", to=cfg_topic),
        retain=True,
    )
    # no controller here to send receipts: the outbox's PUBACK path alone
    config = fleet.config("loa-1", reconnect_min_s=0.5, reconnect_max_s=4, receipts=False)
    agent = Agent(load_config(config))
    agent.start()
    try:
        probe.ack_for("loa-1", "cfg-1")
        before = [agent.emit(PlayMissed(key=f"n{i}", reason="test")).id for i in range(20)]
        probe.wait_until(lambda ms: len(_event_ids(ms)) >= 21)

        broker.stop()
        listener = CountingListener(broker.port)
        during = [agent.emit(PlayMissed(key=f"n{100 + i}", reason="test")).id for i in range(50)]
        time.sleep(30)  # the outage itself: this is the stimulus, not an assertion
        listener.close()
        attempts = listener.count
        # before the start: the agent may be back online before start() returns
        t_back = now_ms()
        broker.start()

        probe.publish(
            cfg_topic,
            fleet.seal("config.set", {"version": 2}, cmd_id="cfg-2", to=cfg_topic),
            retain=True,
        )
        after = [agent.emit(PlayMissed(key=f"n{200 + i}", reason="test")).id for i in range(20)]
        probe.ack_for("loa-1", "cfg-2", timeout=60)
        probe.status_is("loa-1", "online", after=t_back, timeout=60)
        assert agent.outbox.wait_empty(60)
        probe.wait_until(lambda ms: set(before + during + after) <= set(_event_ids(ms)), 60)

        ids = _event_ids(probe.messages)
        assert len(set(ids)) == len(set(before + during + after)) + 1  # + agent.started
        # paho resent what was in flight; we did not add copies of our own
        assert len(ids) - len(set(ids)) <= len(during)
        # reconnect attempts were spaced by the backoff: no busy loop (cap 4 s, 30 s away)
        assert 2 <= attempts <= 60, attempts
        assert agent.config_doc is not None and agent.config_doc.version == 2
    finally:
        agent.close()


def _event_ids(messages):
    return [m.json()["id"] for m in messages if m.topic.endswith("/event")]


@pytest.mark.slow
def test_kill9_while_writing_events_delivers_each_written_event(fleet, probe, tmp_path):
    """kill -9 at random moments during writes: every event whose write returned arrives."""
    import random

    written = tmp_path / "written.log"
    driver = fleet.event_writer("loa-1", written)
    rng = random.Random(7)
    for _ in range(5):
        before = written.stat().st_size if written.exists() else 0
        driver.start()
        # kill only once it is writing: a kill during Python's start-up tests nothing
        deadline = time.monotonic() + 60
        while (written.stat().st_size if written.exists() else 0) <= before:
            assert driver.alive and time.monotonic() < deadline, driver.output()[-2000:]
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 1.0))  # then pull the plug at a random moment
        driver.kill9()
    last = fleet.spawn("loa-1")
    ids = [line.split()[0] for line in written.read_text().splitlines() if line.strip()]
    assert len(ids) > 50
    probe.wait_until(lambda ms: set(ids) <= set(_event_ids(ms)), timeout=90)
    received = _event_ids(probe.messages)
    assert set(ids) <= set(received)
    assert last.alive


def test_agent_over_tls_with_the_sites_ca(fleet, site, tmp_path):
    """TLS when configured: the agent verifies the broker's certificate against its CA file."""
    from cli.brokers.mosquitto import Mosquitto
    from tests.fleet import AgentProcess, Probe
    from tests.tls_helpers import write_tls_pair

    (tmp_path / "tls").mkdir()
    cert, key = write_tls_pair(tmp_path / "tls")
    (tmp_path / "other").mkdir()
    other_ca, _ = write_tls_pair(tmp_path / "other")
    tls_broker = Mosquitto(
        tmp_path / "tls-broker",
        password_file=site.passwd_path,
        acl_file=site.acl_path,
        tls=(cert, key),
    )
    tls_broker.start()
    try:
        user, password = site.controller_credentials()
        watcher = Probe(tls_broker.host, tls_broker.port, user, password, tls_ca=cert)
        good = AgentProcess(
            fleet.config("loa-1", port=tls_broker.port, tls=True, ca_file=str(cert)),
            tmp_path / "tls-good.log",
        ).start()
        bad = AgentProcess(
            fleet.config("loa-2", port=tls_broker.port, tls=True, ca_file=str(other_ca)),
            tmp_path / "tls-bad.log",
        ).start()
        fleet.processes += [good, bad]
        watcher.status_is("loa-1", "online")
        good.terminate()
        watcher.status_is("loa-1", "offline")
        assert bad.alive and watcher.on("xaso/dev/loa-2/status") == []
        watcher.close()
    finally:
        tls_broker.stop()
