"""Uploads that used to be refused wrongly or passed wrongly, made by the real ffmpeg.

Random bytes, a file 0.03 s over the limit, hiss, stereo with one channel
inverted, and what a browser records (WebM/Opus): each is refused naming the
file and saying what to do, or becomes a clip at the target loudness.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from broadcast.audio.clip_preparation import MAX_GAIN_DB, prepare
from broadcast.audio.clips import ClipError, ClipSettings, probe
from tests.audio_helpers import dominant_hz, lufs, read_samples
from tests.broadcast_api_helpers import Ctl, refused

ROOT = Path(__file__).resolve().parent.parent


def ffmpeg(*args: str) -> None:
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", *args]
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True, timeout=120)


def _xaso_clip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "clip", *args],
        check=False,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _refusal(src: Path, out: Path, settings: ClipSettings | None = None) -> ClipError:
    with pytest.raises(ClipError) as refused_clip:
        prepare(src, out, settings or ClipSettings(), name=src.name)
    assert not out.exists() or not list(out.iterdir()), "nothing is left in the clip folder"
    return refused_clip.value


def test_random_bytes_name_the_file_and_the_command_line_says_why(tmp_path: Path) -> None:
    src = tmp_path / "ban-tin.mp3"
    src.write_bytes(os.urandom(200_000))  # big enough for ffprobe to find a fake mp3 frame
    err = _refusal(src, tmp_path / "clips")
    assert err.code == "not_audio", err.detail
    assert err.message_vi.startswith("Tệp «ban-tin.mp3»: Tệp không phải âm thanh")
    assert "hãy chọn tệp MP3" in err.message_vi  # what to do
    assert err.message_en.startswith('File "ban-tin.mp3": Not an audio file')
    assert "damaged" not in err.message_en
    done = _xaso_clip("prepare", str(src), str(tmp_path / "out"))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert 'File "ban-tin.mp3": Not an audio file' in lines[0]
    assert lines[1].startswith("xaso clip: reason: ") and len(lines[1]) > len("xaso clip: reason: ")


def test_a_file_cut_short_is_named_and_says_what_to_do(tmp_path: Path) -> None:
    full = tmp_path / "full.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=6", "-c:a", "flac", str(full))
    cut = tmp_path / "thong-bao.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    err = _refusal(cut, tmp_path / "clips")
    assert err.code == "corrupt"
    assert "«thong-bao.flac»" in err.message_vi and "tải lên lại" in err.message_vi
    assert "export it again from the recorder" in err.message_en
    # a stream that ends early though its header is whole says how much was there
    short = tmp_path / "ngan.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=8", "-c:a", "libmp3lame", str(short))
    whole = short.read_bytes()
    short.write_bytes(whole[: len(whole) // 2])
    err = _refusal(short, tmp_path / "clips")
    assert err.code == "corrupt"
    assert "of 0:00:08 could be read" in err.message_en, err.message_en


def test_just_over_the_length_limit_says_the_real_length(tmp_path: Path) -> None:
    src = tmp_path / "hop-dan.wav"  # 7,200.03 s of 1 kHz-sampled silence: 7 MB, exact header
    ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=1000:cl=mono", "-t", "7200.03", "-c:a", "pcm_u8", str(src)
    )
    assert probe(src, ClipSettings(max_duration_s=8000)).duration_s == pytest.approx(7200.03)
    err = _refusal(src, tmp_path / "clips")
    assert err.code == "too_long"
    assert "2:00:00.03" in err.message_en and "0.03 s over the limit of 2:00:00" in err.message_en
    assert "2:00:00.03" in err.message_vi and "0,03 giây" in err.message_vi
    assert "chia thành nhiều tệp" in err.message_vi
    # far over, whole seconds say it
    long = _refusal(src, tmp_path / "clips", ClipSettings(max_duration_s=3600))
    assert "lasts 2:00:00, 1:00:00 over the limit of 1:00:00" in long.message_en


def test_hiss_is_not_raised_into_a_bulletin(tmp_path: Path) -> None:
    hiss = tmp_path / "re.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=6:c=pink:a=0.01:seed=7", "-ac", "1", str(hiss))
    rate, samples = read_samples(hiss, 48000)
    assert lufs(samples, rate) == pytest.approx(-55, abs=2.0)  # measured here, not by ffmpeg
    err = _refusal(hiss, tmp_path / "clips")
    assert err.code == "too_quiet", err.detail
    assert "«re.wav»" in err.message_vi and "ghi âm lại" in err.message_vi
    assert "raising it would broadcast its hiss" in err.message_en
    # a quiet recording within the gain allowed still becomes a clip at the target
    quiet = tmp_path / "quiet.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=f=500:d=3", "-af", "volume=-15dB", str(quiet))
    rate, samples = read_samples(quiet, 48000)
    assert ClipSettings().target_lufs - lufs(samples, rate) < MAX_GAIN_DB
    clip = prepare(quiet, tmp_path / "clips", ClipSettings())
    rate, samples = read_samples(clip.path, 48000)
    assert lufs(samples, rate) == pytest.approx(-16, abs=1.0)


def test_loud_stereo_with_one_channel_inverted_is_not_silent(tmp_path: Path) -> None:
    src = tmp_path / "dao-pha.wav"
    graph = "[0]asplit[l][r];[r]volume=-1[ri];[l][ri]join=inputs=2:channel_layout=stereo"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=4", "-filter_complex", graph, str(src))
    _, summed = read_samples(src, 48000)  # what a plain downmix (-ac 1) hears: nothing
    assert float(np.max(np.abs(summed))) < 1e-3
    clip = prepare(src, tmp_path / "clips", ClipSettings(), name=src.name)
    rate, samples = read_samples(clip.path, 48000)
    assert lufs(samples, rate) == pytest.approx(-16, abs=1.0)
    assert dominant_hz(samples, rate) == pytest.approx(440, abs=2)
    assert abs(clip.duration_ms - 4000) <= 60


def test_ordinary_stereo_is_still_summed(tmp_path: Path) -> None:
    src = tmp_path / "stereo.wav"  # the same tone on both sides, one side quieter
    graph = "[0]asplit[l][r];[r]volume=0.5[rq];[l][rq]join=inputs=2:channel_layout=stereo"
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=3", "-filter_complex", graph, str(src))
    clip = prepare(src, tmp_path / "clips", ClipSettings())
    rate, samples = read_samples(clip.path, 48000)
    assert lufs(samples, rate) == pytest.approx(-16, abs=1.0)
    assert dominant_hz(samples, rate) == pytest.approx(300, abs=2)


def test_what_a_browser_records_webm_opus_becomes_a_clip(tmp_path: Path) -> None:
    src = tmp_path / "ghi-am.webm"
    ffmpeg("-f", "lavfi", "-i", "sine=f=620:d=3", "-c:a", "libopus", "-b:a", "48k", str(src))
    assert probe(src).codec == "opus"
    clip = prepare(src, tmp_path / "clips", ClipSettings(codec="opus"))
    rate, samples = read_samples(clip.path, 48000)
    assert dominant_hz(samples, rate) == pytest.approx(620, abs=2)
    assert lufs(samples, rate) == pytest.approx(-16, abs=1.0)
    assert abs(clip.duration_ms - 3000) <= 60


def test_the_upload_route_names_the_file_it_refuses(offline: Ctl) -> None:
    hiss = offline.tmp / "ban tin sang.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=3:c=pink:a=0.01:seed=3", "-ac", "1", str(hiss))
    body = refused(offline.upload("broadcaster", hiss, "Bản tin sáng"), 422, "too_quiet")
    assert body["vi"].startswith("Tệp «ban tin sang.wav»: Âm thanh quá nhỏ")
    assert body["en"].startswith('File "ban tin sang.wav": The audio is too quiet')
    assert "LUFS" in body["vi"] and "ffmpeg" not in body["vi"] + body["en"]
    junk = offline.tmp / "notes.mp3"
    junk.write_bytes(os.urandom(200_000))
    body = refused(offline.upload("broadcaster", junk, "Ghi chú"), 422, "not_audio")
    assert "«notes.mp3»" in body["vi"] and "hãy chọn tệp" in body["vi"]
    assert offline.call("broadcaster", "GET", "/api/clips").json() == []
