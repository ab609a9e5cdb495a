"""The spare decoder lives while there is something to play: real ffmpeg processes, a
player on the WAV-file sink, and the speaker's setting for how long an idle one stays."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from msgspec import ValidationError

from broadcast.audio.decode import DecoderPool
from broadcast.config import SpeakerSection
from plumbing.validation import convert
from tests.player_helpers import Rig, assert_tone, ffmpeg_children, req, samples, tone


class Clock:
    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s


def until(what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def test_an_idle_pool_lets_its_spare_go_after_keep_s_and_starts_it_again_on_demand():
    clock = Clock()
    pool = DecoderPool(keep_s=120, clock=clock)
    before = ffmpeg_children()
    try:
        pool.warm()
        assert pool.waiting == 1 and ffmpeg_children() == before + 1
        clock.s += 119
        assert pool.release_idle() == pytest.approx(1.0)  # not yet: the wait left
        assert pool.waiting == 1
        clock.s += 1
        assert pool.release_idle() is None and pool.released == 1
        assert pool.waiting == 0 and ffmpeg_children() == before  # the process is gone
        assert pool.release_idle() is None  # nothing left to let go
        pool.warm()  # something was queued
        assert pool.waiting == 1 and ffmpeg_children() == before + 1
        decoder = pool.take()  # the warm one, and a new spare behind it
        decoder.close()
        assert pool.taken == {"warm": 1, "cold": 0, "native": 0} and pool.waiting == 1
        clock.s += 60
        assert pool.release_idle() == pytest.approx(60.0)  # a take counts as use
    finally:
        pool.close()
    assert ffmpeg_children() == before


def test_without_keep_s_the_spare_stays_for_good():
    clock = Clock()
    pool = DecoderPool(clock=clock)
    try:
        pool.warm()
        clock.s += 86_400
        assert pool.release_idle() is None and pool.waiting == 1 and pool.released == 0
    finally:
        pool.close()


def test_a_player_lets_its_spare_go_when_idle_and_plays_the_next_clip_from_a_warm_one(
    tmp_path: Path,
):
    clip = tone(tmp_path / "a.wav", 440, 1.0)
    pool = DecoderPool(keep_s=0.5)
    rig = Rig(tmp_path, decoders=pool)
    try:
        until("the spare started at the player's start is let go", lambda: pool.released == 1)
        assert pool.waiting == 0
        rig.player.submit(req("after-idle", clip))
        kind, body = rig.events.ended("after-idle", timeout_s=60)
        assert (kind, body["outcome"]) == ("play.finished", "completed")
        (record,) = [e for e in rig.sink.played() if e["key"] == "after-idle"]
        assert_tone(samples(rig.sink.dir / record["file"]), 440, 1.0)
        # queued, it started a spare at once, and the play took that warm one
        assert pool.taken == {"warm": 1, "cold": 0, "native": 0}
        until("the spare behind it is let go once idle again", lambda: pool.released == 2)
    finally:
        rig.player.close()


@pytest.mark.parametrize("bad", [-1, "soon", 86_401, None])
def test_a_bad_keep_time_is_refused_in_the_speakers_section(bad: object):
    with pytest.raises(ValidationError, match="spare_decoder_keep_s"):
        convert({"spare_decoder_keep_s": bad}, SpeakerSection, strict=False)


@pytest.mark.parametrize("bad", ["yes", 2, None])
def test_a_bad_native_decoders_switch_is_refused_in_the_speakers_section(bad: object):
    with pytest.raises(ValidationError, match="native_decoders"):
        convert({"native_decoders": bad}, SpeakerSection, strict=False)


def test_the_keep_time_defaults_to_two_minutes():
    assert SpeakerSection().spare_decoder_keep_s == 120.0
    assert (
        convert({"spare_decoder_keep_s": 0}, SpeakerSection, strict=False).spare_decoder_keep_s == 0
    )
