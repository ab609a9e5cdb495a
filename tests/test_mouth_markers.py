"""The mouth-to-speaker bench's markers (bench/_markers.py): found, named and paired right.

The bench's figures are only as good as these: each burst found at its onset,
in the browser's raw capture and after Opus on a speaker alike, named by its
pitch, a cut burst left out, and each speaker's burst paired with the
browser's of the same slot.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from bench._markers import (
    CYCLE_MS,
    FREQS_HZ,
    PERIOD_S,
    RATE,
    FrameClock,
    Marker,
    assemble,
    cycle,
    expected,
    markers,
    onsets,
    pair,
    write_wav,
)


def test_every_burst_is_found_at_its_onset_and_named_by_its_pitch() -> None:
    x = np.tile(cycle(), 2)
    lead = 0.25 * RATE  # the first burst needs quiet before it
    x = np.concatenate([np.zeros(int(lead)), x])
    found = onsets(x, RATE)
    assert [slot for _, slot in found] == list(range(len(FREQS_HZ))) * 2
    starts = lead + np.arange(2 * len(FREQS_HZ)) * PERIOD_S * RATE
    late_ms = (np.array([i for i, _ in found]) - starts) * 1000 / RATE
    assert np.all((late_ms > 0) & (late_ms < 0.5)), late_ms  # a quarter-way up the attack


def test_a_burst_cut_by_a_join_or_a_gap_is_not_a_marker() -> None:
    x = np.tile(cycle(), 2)
    period = round(PERIOD_S * RATE)
    joined = x[round(0.05 * RATE) :]  # a speaker joins 50 ms into the first burst
    joined = np.concatenate([np.zeros(RATE // 2), joined])  # its silence before the join
    gap = joined.copy()
    at = RATE // 2 + 3 * period - round(0.05 * RATE) + round(0.06 * RATE)
    gap[at : at + RATE // 10] = 0  # a dropout in the middle of slot 3's burst
    slots = [slot for _, slot in onsets(gap, RATE)]
    assert slots == [1, 2, 4, 5, 6, 7, *range(8)]


def test_an_opus_round_trip_moves_an_onset_by_under_half_a_millisecond(tmp_path: Path) -> None:
    """What the speakers' sinks hold went through Opus; the browser's capture did not."""
    mic = write_wav(tmp_path / "mic.wav")
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(mic), "-c:a", "libopus", "-b:a", "48k"]
    argv += ["-application", "voip", "-frame_duration", "20", str(tmp_path / "mic.ogg")]
    subprocess.run(argv, check=True, timeout=60)
    decode = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(tmp_path / "mic.ogg")]
    decode += ["-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"]
    raw = subprocess.run(decode, check=True, capture_output=True, timeout=60).stdout
    opus = np.frombuffer(raw, dtype="<i2") / 32768 * 0.3  # a speaker's volume, too
    lead = np.zeros(RATE // 4)
    before = onsets(np.concatenate([lead, cycle()]), RATE)
    after = onsets(np.concatenate([lead, opus]), RATE)
    assert [s for _, s in after] == [s for _, s in before] == list(range(len(FREQS_HZ)))
    moved_ms = (np.array([i for i, _ in after]) - [i for i, _ in before]) * 1000 / RATE
    assert np.all(np.abs(moved_ms) < 0.5), moved_ms


def test_speaker_markers_pair_with_the_browsers_of_their_slot_within_a_cycle() -> None:
    # the browser's capture began at slot 5 of the loop; 40 bursts
    browser = [Marker(1000 + k * PERIOD_S * 1000, (5 + k) % len(FREQS_HZ)) for k in range(40)]
    lag = 1330.0
    heard = [Marker(b.at_ms + lag + 0.1 * k, b.slot) for k, b in enumerate(browser)]
    speaker = heard[2:17] + heard[18:38]  # joined after two, lost one, stopped two early
    pairs = pair(browser, speaker)
    assert len(pairs) == len(speaker)
    assert all(b.slot == s.slot for b, s in pairs)
    assert all(abs(s.at_ms - b.at_ms - lag) < 5 for b, s in pairs)
    lo, hi = speaker[0].at_ms - 200, speaker[-1].at_ms + 400
    assert expected(browser, lo, hi, lag) == 36  # the lost one is missed, not the others


def test_a_burst_the_browser_never_captured_pairs_with_nothing() -> None:
    browser = [Marker(5000 + k * PERIOD_S * 1000, k % len(FREQS_HZ)) for k in range(16)]
    before = [Marker(b.at_ms - 2000, b.slot) for b in browser[:3]]  # said before it listened
    beyond = [Marker(browser[0].at_ms + CYCLE_MS + 50, 0)]  # a cycle late: another burst's
    assert pair(browser, before) == []
    assert [(b.at_ms, s.at_ms) for b, s in pair(browser, beyond)] == [
        (browser[8].at_ms, beyond[0].at_ms)
    ]


def test_the_frame_clock_finds_the_audio_threads_offset_from_its_pongs() -> None:
    rng = np.random.default_rng(13)
    rate, offset_ms, burst = 48_000, 1_765_000_000_000.0, 1024  # renders 1024 frames at once
    pings = []
    for k in range(600):
        sent = offset_ms + 50 * k + rng.uniform(0, 50)
        handled = sent + rng.exponential(2.0)
        frame = ((handled - offset_ms) * rate / 1000) // burst * burst  # the last burst's
        pings.append((sent, handled + rng.exponential(2.0), frame))
    clock = FrameClock(pings, rate)
    for frame in (0, 480_000, 1_440_000):
        error_ms = clock.wall_ms(frame) - (offset_ms + frame * 1000 / rate)
        assert 0 <= error_ms < 2  # never early: a pong comes after its frame
    assert 5 < clock.spread_ms() < 20  # half a burst, and the delivery


def test_the_captured_chunks_make_one_recording_from_the_first_frame() -> None:
    first, x = assemble([(1280, np.ones(128)), (1000, np.full(128, 2.0))])
    assert first == 1000 and len(x) == 408
    assert x[0] == 2 and x[127] == 2 and x[128:280].sum() == 0 and x[280:].sum() == 128
    assert markers(x, RATE, 0.0) == []  # too short to hold a marker
