"""Spoken calls are said late rather than never, and one too old is reported, not dropped.

Real parts: espeak-ng and ffmpeg make the call, a Player plays it into the
WAV-file sink; what is checked is the proof of play and what was recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broadcast.audio.lateness import CALL_CLOCK, CALL_EXPIRED, CALL_SUPERSEDED
from broadcast.audio.request import PlayRequest
from broadcast.audio.tts import EspeakEngine
from kiosk.caller import Call, Caller
from tests.player_helpers import Events, Rig, now_ms, tone

LABEL = "A015 → quầy 2"


@pytest.fixture(scope="module")
def bulletin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tone(tmp_path_factory.mktemp("bulletin") / "bulletin.wav", 440, 4.0)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared, so the call's clip is made once and the calls reach the player at once."""
    return tmp_path_factory.mktemp("call-clips")


class Hall:
    """A caller on a real player; its own reports and the player's in one list."""

    def __init__(self, tmp: Path, clip_dir: Path, **caller_kw: Any) -> None:
        self.rig = Rig(tmp)
        self.events: Events = self.rig.events
        self.caller = Caller(
            self.rig.player,
            EspeakEngine(),
            clip_dir,
            now_ms=caller_kw.pop("now_ms", now_ms),
            on_event=self.events,
            repeats=1,
            **caller_kw,
        )
        self.caller.start()

    def hold(self, clip: Path, priority: int = 6) -> None:
        """Other audio first: a priority bulletin the calls (priority 4) wait behind."""
        self.rig.player.submit(PlayRequest("bulletin", "command", priority, 4000, clip_path=clip))
        self.events.wait("play.started", "bulletin")

    def said(self) -> list[str]:
        return [e["label"] for e in self.rig.sink.played() if e["key"].startswith("call-")]

    def close(self) -> None:
        self.caller.close()
        self.rig.player.close()


@pytest.fixture
def hall(tmp_path: Path, clip_dir: Path) -> Iterator[Hall]:
    made = Hall(tmp_path, clip_dir)
    yield made
    made.close()


def ended(hall: Hall, call: Call) -> tuple[str, dict[str, Any]]:
    return hall.events.ended(f"call-{call.number}-{call.counter}-{call.called_ms}", timeout_s=60)


def test_a_call_waiting_behind_other_audio_is_still_said(hall: Hall, bulletin: Path) -> None:
    hall.hold(bulletin)
    call = Call("A015", 2, "t-1", now_ms())
    assert hall.caller.call(call) is None
    kind, body = ended(hall, call)
    assert (kind, body["outcome"], body["origin"]) == ("play.finished", "completed", "call")
    assert [e["key"] for e in hall.rig.sink.played()] == [
        "bulletin",
        f"call-A015-2-{call.called_ms}",
    ]
    assert hall.said() == [LABEL]


def test_a_call_too_old_when_its_turn_comes_is_reported(
    tmp_path: Path, clip_dir: Path, bulletin: Path
) -> None:
    hall = Hall(tmp_path, clip_dir, max_age_ms=1500)
    try:
        hall.hold(bulletin)
        call = Call("A015", 2, "t-1", now_ms())
        assert hall.caller.call(call) is None
        kind, body = ended(hall, call)
        hall.events.wait("play.finished", "bulletin")
    finally:
        hall.close()
    assert (kind, body["reason"], body["origin"], body["label"]) == (
        "play.missed",
        CALL_EXPIRED,
        "call",
        LABEL,
    )
    assert hall.said() == []


def test_a_call_too_old_on_arrival_is_reported_at_once(tmp_path: Path, clip_dir: Path) -> None:
    clock = [1_795_399_200_000]
    hall = Hall(tmp_path, clip_dir, now_ms=lambda: clock[0], max_age_ms=120_000)
    try:
        old = Call("A015", 2, "t-1", clock[0] - 120_001)
        ahead = Call("A016", 2, "t-2", clock[0] + 120_001)
        assert hall.caller.call(old) == CALL_EXPIRED
        assert hall.caller.call(ahead) == CALL_CLOCK
        fresh = Call("A017", 2, "t-3", clock[0] - 119_000)  # late, but not too old: said
        assert hall.caller.call(fresh) is None
        assert ended(hall, fresh)[0] == "play.finished"
    finally:
        hall.close()
    missed = {b["key"]: b for b in hall.events.of("play.missed")}
    assert missed["call-A015-2-1795399079999"]["reason"] == CALL_EXPIRED
    assert missed["call-A015-2-1795399079999"]["planned_ms"] == old.called_ms
    assert missed["call-A016-2-1795399320001"]["reason"] == CALL_CLOCK
    assert "call-A017-2-1795399081000" not in missed
    assert hall.said() == ["A017 → quầy 2"]


def test_a_recall_supersedes_the_call_still_waiting(hall: Hall, bulletin: Path) -> None:
    hall.hold(bulletin)
    first = Call("A015", 2, "t-1", now_ms())
    again = Call("A015", 2, "t-1", first.called_ms + 1)
    other = Call("A020", 3, "t-2", first.called_ms + 2)
    for call in (first, again, other):
        assert hall.caller.call(call) is None
    kind, body = ended(hall, first)
    assert (kind, body["reason"]) == ("play.missed", CALL_SUPERSEDED)
    assert ended(hall, again)[1]["outcome"] == "completed"
    assert ended(hall, other)[1]["outcome"] == "completed"
    assert hall.said() == [LABEL, "A020 → quầy 3"]  # once, and the other ticket's call too


def test_a_ticket_served_before_its_call_is_said_is_not_called(hall: Hall, bulletin: Path) -> None:
    hall.hold(bulletin)
    call = Call("A015", 2, "t-1", now_ms())
    assert hall.caller.call(call) is None
    hall.caller.moved_on("t-1")  # served at the counter while the bulletin played
    kind, body = ended(hall, call)
    assert (kind, body["reason"]) == ("play.missed", CALL_SUPERSEDED)
    hall.events.wait("play.finished", "bulletin")
    assert hall.said() == []


def test_a_bad_max_age_is_refused(tmp_path: Path, clip_dir: Path) -> None:
    rig = Rig(tmp_path)
    try:
        with pytest.raises(ValueError, match="max age is positive"):
            Caller(
                rig.player,
                EspeakEngine(),
                clip_dir,
                now_ms=now_ms,
                on_event=rig.events,
                max_age_ms=0,
            )
    finally:
        rig.player.close()
