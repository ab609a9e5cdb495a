"""Plays told as they happened: a play cut off with the agent, by a stop, by an emergency;
and the first play after a start, as punctual as any other.

The end-to-end tests run a real agent process on the real broker (the harness of
tests/test_speaker.py); the mark's own rules are checked on a settings double.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from broadcast.play_marks import SETTING, PlayMarks
from protocol.events import PlayFinished, PlayMissed, PlayStarted
from tests.player_helpers import ffmpeg_children
from tests.test_speaker import DEV, events, item, local_in, schedule_doc, wait_event
from tests.timing import on_time

CMD = f"xaso/dev/{DEV}/cmd"
AIRED_TIMEOUT_S = 30.0


def marks_on_disk(tmp_path: Path) -> dict[str, Any]:
    """The agent's mark, read from its state file beside it (WAL: readers do not block)."""
    path = tmp_path / "state" / DEV / "agent.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM setting WHERE name = ?", (SETTING,)).fetchone()
    except sqlite3.OperationalError:  # the agent has not made its tables yet
        return {}
    finally:
        db.close()
    return json.loads(row[0]) if row and row[0] else {}


def wait_aired(tmp_path: Path, key: str) -> int:
    """Until the mark on disk says some of ``key`` aired: then a kill cuts it mid-play."""
    deadline = time.monotonic() + AIRED_TIMEOUT_S
    while time.monotonic() < deadline:
        mark = marks_on_disk(tmp_path).get(key)
        if mark is not None and mark["played_ms"] > 0:
            return int(mark["played_ms"])
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of {key} on disk within {AIRED_TIMEOUT_S} s")


def agent_starts(messages) -> int:
    topic = f"xaso/dev/{DEV}/event"
    return sum(1 for m in messages if m.topic == topic and m.json()["type"] == "agent.started")


def test_kill9_mid_play_is_told_as_interrupted_with_what_aired(radio, probe, tmp_path):
    bulletin, after = radio.clip(440, 6.0), radio.clip(660, 0.5)
    first_local, _ = local_in(8)
    later_local, _ = local_in(24)  # played by the restarted agent: its runner has looked past
    doc = schedule_doc(1, [item("ban-tin", bulletin, first_local), item("sau", after, later_local)])
    topic = f"xaso/dev/{DEV}/schedule"
    probe.publish(topic, radio.fleet.seal("schedule.set", doc, cmd_id="s", to=topic), retain=True)
    agent = radio.spawn()
    probe.ack_for(DEV, "s")
    key = f"ban-tin@{first_local}"
    started = wait_event(probe, "play.started", key)
    aired = wait_aired(tmp_path, key)
    agent.kill9()  # the power goes mid-play: nothing of the end is told
    assert not [e for e in events(probe, "play.finished") if e["body"]["key"] == key]

    agent.start()
    cut = wait_event(probe, "play.interrupted", key)
    assert cut["reason"] == "crash"  # the same boot: the agent died, the device did not
    assert cut["actual_ms"] == started["actual_ms"] and cut["planned_ms"] == started["planned_ms"]
    assert 0 < aired <= cut["played_ms"] < 6000  # at least what the kill found on disk
    assert cut["checkpoint_ms"] >= started["actual_ms"]
    assert (cut["item_id"], cut["origin"], cut["label"]) == (
        "ban-tin",
        "schedule",
        "Bản tin ban-tin",
    )
    # the runner of the restarted agent has looked past it: the next item plays, and the
    # interrupted one is not reported a second time as missed
    wait_event(probe, "play.finished", f"sau@{later_local}")
    assert [e["body"]["key"] for e in events(probe, "play.missed")] == []
    assert marks_on_disk(tmp_path) == {}


def test_a_stop_mid_play_is_told_as_stopped_and_nothing_more_after_a_crash(radio, probe, tmp_path):
    agent = radio.spawn()
    probe.status_is(DEV, "online")
    tone = radio.fleet.seal(
        "device.test_tone", {"frequency_hz": 1200, "duration_s": 6}, cmd_id="tone", to=CMD
    )
    probe.publish(CMD, tone)
    wait_event(probe, "play.started", "tone")
    wait_aired(tmp_path, "tone")
    probe.publish(
        CMD, radio.fleet.seal("broadcast.stop", {"priority_max": 9}, cmd_id="stop", to=CMD)
    )
    stopped = wait_event(probe, "play.finished", "tone")
    assert stopped["outcome"] == "stopped" and 0 < stopped["played_ms"] < 6000
    assert "resumes" not in stopped
    # its end was told: a crash now leaves nothing to tell at the next start
    runs = agent_starts(probe.messages)
    agent.kill9()
    agent.start()
    probe.wait_until(lambda messages: agent_starts(messages) > runs, timeout=60)
    assert events(probe, "play.interrupted") == []  # told before agent.started, or never


def first_play(radio, probe, clip: dict) -> tuple[dict, dict]:
    """The first play after a start, on time, and the telemetry after it."""
    probe.status_is(DEV, "online")
    probe.publish(
        CMD, radio.fleet.seal("broadcast.play", {"clip": clip, "priority": 5}, cmd_id="p", to=CMD)
    )
    started = wait_event(probe, "play.started", "p")  # a play-now: planned when it came
    # no later than the player lets any play be (generous: the fact that matters is below)
    assert on_time(started["actual_ms"], started["planned_ms"])
    telemetry = probe.wait_for(
        lambda m: (
            m.topic == f"xaso/dev/{DEV}/telemetry"
            and m.json()["ts"] > started["actual_ms"]
            and sum(m.json()["audio"]["decoders"].values()) >= 1
        )
    ).json()
    return started, telemetry


def test_the_first_play_after_a_start_needs_no_decoder_waiting(radio, probe):
    clip = radio.clip(880, 0.5, fmt="mp3")  # as clips are prepared
    agent = radio.spawn()
    _, telemetry = first_play(radio, probe, clip)
    # mpg123, started for the clip: no ffmpeg was waiting for it, nor is one after
    assert telemetry["audio"]["decoders"] == {"warm": 0, "cold": 0, "native": 1}
    wait_event(probe, "play.finished", "p")
    assert ffmpeg_children(agent.proc.pid) == 0


def test_without_small_decoders_the_first_play_takes_an_ffmpeg_started_ahead(radio, probe):
    clip = radio.clip(880, 0.5, fmt="mp3")
    radio.spawn(native_decoders=False)
    _, telemetry = first_play(radio, probe, clip)
    # its ffmpeg was started with the agent, before the command came
    assert telemetry["audio"]["decoders"] == {"warm": 1, "cold": 0, "native": 0}


# the mark's rules, on a settings double


class Settings(dict[str, str]):
    def setting(self, name: str) -> str | None:
        return self.get(name)

    def set_setting(self, name: str, value: str) -> None:
        self[name] = value


RECORD = {"key": "k", "origin": "schedule", "priority": 2, "label": "Bản tin", "planned_ms": 1000}


def playing(played_ms: int, actual_ms: int = 1000, resumed_from_ms: int = 0) -> dict[str, Any]:
    return {**RECORD, "actual_ms": actual_ms, "played_ms": resumed_from_ms + played_ms}


def test_a_mark_left_by_another_boot_is_a_power_loss_and_by_this_boot_a_crash():
    disk, told = Settings(), []
    marks = PlayMarks(disk, boot="boot-1")
    marks.started(PlayStarted(**RECORD, actual_ms=1000), 1000)
    marks.checkpoint(playing(400), 1400)  # sooner than a second after the last write: kept back
    assert json.loads(disk[SETTING])["k"]["played_ms"] == 0
    marks.checkpoint(playing(2500), 3500)
    (cut,) = PlayMarks(disk, boot="boot-2").recover(told.append)
    assert (cut.reason, cut.played_ms, cut.checkpoint_ms, cut.actual_ms) == (
        "power_loss",
        2500,
        3500,
        1000,
    )
    assert (cut.key, cut.label, cut.origin) == ("k", "Bản tin", "schedule")
    assert told == [cut] and json.loads(disk[SETTING]) == {}  # told, then cleared
    assert PlayMarks(disk, boot="boot-2").recover(told.append) == []

    marks = PlayMarks(disk, boot="boot-2")
    marks.started(PlayStarted(**RECORD, actual_ms=5000), 5000)
    (cut,) = PlayMarks(disk, boot="boot-2").recover(told.append)
    assert (cut.reason, cut.played_ms) == ("crash", 0)
    marks = PlayMarks(disk, boot=None)
    marks.started(PlayStarted(**RECORD, actual_ms=5000), 5000)
    assert PlayMarks(disk, boot=None).recover(told.append)[0].reason == "agent_down"


def test_a_preempted_play_waits_marked_and_its_end_clears_the_mark():
    disk, told = Settings(), []
    marks = PlayMarks(disk, boot="b")
    marks.started(PlayStarted(**RECORD, actual_ms=1000), 1000)
    cut = PlayFinished(**RECORD, actual_ms=1000, outcome="preempted", played_ms=3000, resumes=True)
    marks.ended(cut, 4000)
    marks.checkpoint(playing(3000), 6000)  # a stale look at the cut part changes nothing
    # a power cut during the emergency: the rest is still to tell
    (waiting,) = PlayMarks(disk, boot="b").recover(told.append)
    assert (waiting.actual_ms, waiting.resumed_from_ms, waiting.played_ms) == (None, 3000, 0)

    marks = PlayMarks(disk, boot="b")
    marks.started(PlayStarted(**RECORD, actual_ms=1000), 1000)
    marks.ended(cut, 4000)
    rest = {**RECORD, "resumed_from_ms": 3000}
    marks.started(PlayStarted(**rest, actual_ms=9000), 9000)
    marks.checkpoint(playing(1500, actual_ms=9000, resumed_from_ms=3000), 10_500)
    assert json.loads(disk[SETTING])["k"]["played_ms"] == 1500  # of this part
    marks.ended(PlayFinished(**rest, actual_ms=9000, outcome="completed", played_ms=2000), 11_000)
    assert json.loads(disk[SETTING]) == {}
    marks.ended(PlayMissed(key="other", reason="late"), 12_000)  # not marked: nothing to do
    assert PlayMarks(disk, boot="b").recover(told.append) == []


def test_a_mark_that_is_not_json_is_dropped_not_a_crash_at_start():
    disk, told = Settings({SETTING: "{not json"}), []
    assert PlayMarks(disk, boot="b").recover(told.append) == []
    assert json.loads(disk[SETTING]) == {}
