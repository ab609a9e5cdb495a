"""The clip pipeline on real files through the real ffmpeg: what it makes, what it refuses."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broadcast.audio import clip_preparation
from broadcast.audio.clip_preparation import prepare
from broadcast.audio.clips import ClipError, ClipSettings, probe
from broadcast.clip_cli import ProgressPrinter
from tests.audio_helpers import dominant_hz, lufs, read_samples, silence_file, tone_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def ten_hours(inputs: Path) -> Path:
    """Ten hours of silence in 36 MB: one minute encoded once, its frames repeated.

    MP3 frames stand alone, so the copies make one valid ten-hour stream
    without encoding (or decoding) ten hours of anything.
    """
    minute = inputs / "minute.mp3"
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono"]
    argv += ["-t", "60", "-c:a", "libmp3lame", "-b:a", "8k", "-write_xing", "0"]
    argv += ["-id3v2_version", "0", "-write_id3v1", "0", str(minute)]
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True, timeout=60)
    path = inputs / "ten-hours.mp3"
    path.write_bytes(minute.read_bytes() * 600)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "case",
    [
        ("mp3", "mp3", 48000, 2),
        ("wav", "opus", 48000, 1),
        ("ogg", "mp3", 44100, 2),
        ("m4a", "opus", 48000, 2),
        ("flac", "mp3", 44100, 1),
    ],
    ids=lambda case: "{} to {} at {}, {} channel(s)".format(*case),
)
def test_every_accepted_format_becomes_a_clip(
    inputs: Path, tmp_path: Path, case: tuple[str, str, int, int]
) -> None:
    fmt, codec, rate, channels = case
    src = tone_file(inputs / f"a440-{channels}.{fmt}", 440, 2.0, -20, fmt, channels=channels)
    out = tmp_path / "clips"
    wanted = ClipSettings(codec=codec, sample_rate=rate)
    clip = prepare(src, out, wanted)

    assert clip.path == out / f"{clip.sha256}.{codec}"
    assert list(out.iterdir()) == [clip.path], "no temporary file is left behind"
    assert _sha(clip.path) == clip.sha256
    assert clip.bytes == clip.path.stat().st_size
    info = probe(clip.path)
    assert (info.channels, info.sample_rate, info.codec) == (1, rate, codec)
    assert (clip.codec, clip.sample_rate) == (codec, rate)
    assert abs(clip.duration_ms - 2000) <= 50
    got_rate, samples = read_samples(clip.path, 48000)
    assert abs(len(samples) / got_rate - 2.0) <= 0.05
    assert dominant_hz(samples, got_rate) == pytest.approx(440, abs=2)
    assert lufs(samples) == pytest.approx(-16.0, abs=1.0)
    assert clip.loudness_lufs == pytest.approx(-16.0, abs=1.0)


@pytest.mark.parametrize("target", [-16.0, -23.0])
def test_quiet_and_loud_tones_come_out_at_one_loudness(
    inputs: Path, tmp_path: Path, target: float
) -> None:
    levels = {}
    for dbfs in (-30, -10):
        src = tone_file(inputs / f"k1-{dbfs}.wav", 1000, 4.0, dbfs)
        clip = prepare(src, tmp_path, ClipSettings(target_lufs=target))
        rate, samples = read_samples(clip.path, 48000)
        levels[dbfs] = lufs(samples, rate)
        assert levels[dbfs] == pytest.approx(target, abs=1.0)
        assert clip.loudness_lufs == pytest.approx(levels[dbfs], abs=0.2)
        assert dominant_hz(samples, rate) == pytest.approx(1000, abs=2)
    assert abs(levels[-30] - levels[-10]) < 1.0


def test_same_audio_same_address_and_a_clip_ref(inputs: Path, tmp_path: Path) -> None:
    src = tone_file(inputs / "a330.flac", 330, 1.5, -12, "flac")
    first = prepare(src, tmp_path / "a", ClipSettings())
    second = prepare(src, tmp_path / "b", ClipSettings())
    assert first.sha256 == second.sha256
    ref = first.ref("http://controller.local/clips/" + first.path.name)
    assert (ref.sha256, ref.bytes, ref.duration_ms) == (first.sha256, first.bytes, 1500)


def test_progress_climbs_to_one(inputs: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    prepare(tone_file(inputs / "a500.wav", 500, 3.0), tmp_path, ClipSettings(), seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen)
    assert any(0.0 < f < 1.0 for f in seen)


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


BAD_INPUTS = {
    "random bytes": ("noise.mp3", lambda d: d.write_bytes(os.urandom(50_000)), "not_audio"),
    "random bytes, no name": ("noise", lambda d: d.write_bytes(os.urandom(50_000)), "not_audio"),
    "zero length": ("empty.mp3", lambda d: d.write_bytes(b""), "empty"),
    "text named .mp3": (
        "notice.mp3",
        lambda d: d.write_text("Thông báo: họp tổ dân phố lúc 19 giờ.\n" * 40),
        "not_audio",
    ),
    "a playlist posing as audio": (
        "list.mp3",
        lambda d: d.write_text("#EXTM3U\n#EXTINF:2,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"),
        "not_audio",
    ),
    "truncated mp3": (
        "cut.mp3",
        lambda d: _truncated(tone_file(d.with_suffix(".full.mp3"), 440, 6.0, fmt="mp3"), d),
        "corrupt",
    ),
    "truncated flac": (
        "cut.flac",
        lambda d: _truncated(tone_file(d.with_suffix(".full.flac"), 440, 4.0, fmt="flac"), d),
        "corrupt",
    ),
    "truncated m4a": (
        "cut.m4a",
        lambda d: _truncated(tone_file(d.with_suffix(".full.m4a"), 440, 4.0, fmt="m4a"), d),
        "corrupt",
    ),
    "all silent": ("silence.wav", lambda d: silence_file(d, 3.0), "silent"),
    "missing": ("absent.mp3", lambda d: None, "not_found"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_refused_with_a_message(tmp_path: Path, case: str) -> None:
    name, make, code = BAD_INPUTS[case]
    src = tmp_path / "in" / name
    src.parent.mkdir()
    make(src)
    out = tmp_path / "clips"
    with pytest.raises(ClipError) as refused:
        prepare(src, out, ClipSettings())
    err = refused.value
    assert err.code == code, err.detail
    assert str(err) == f"{err.message_vi} / {err.message_en}"
    assert err.message_vi and err.message_en and "\n" not in str(err)
    assert not out.exists() or not list(out.iterdir()), "nothing is left in the clip folder"


def test_over_the_size_limit(inputs: Path, tmp_path: Path) -> None:
    src = tone_file(inputs / "a440.wav", 440, 2.0)
    with pytest.raises(ClipError) as refused:
        prepare(src, tmp_path, ClipSettings(max_input_bytes=100_000))
    assert refused.value.code == "too_large"
    assert "MB" in refused.value.message_vi


def test_over_the_duration_limit(inputs: Path, tmp_path: Path) -> None:
    src = tone_file(inputs / "a440-3s.wav", 440, 3.0)
    with pytest.raises(ClipError) as refused:
        prepare(src, tmp_path, ClipSettings(max_duration_s=2.5))
    assert refused.value.code == "too_long"


def test_ten_hours_of_silence_refused_before_any_decode(ten_hours: Path, tmp_path: Path) -> None:
    progress: list[float] = []
    with pytest.raises(ClipError) as refused:
        prepare(ten_hours, tmp_path, ClipSettings(), progress.append)
    # refused on the header: ffmpeg never started on it, so nothing was reported past 0
    assert progress == [0.0]
    assert refused.value.code == "too_long"
    assert "10:0" in refused.value.message_vi
    assert not list(tmp_path.iterdir())


def test_missing_ffmpeg_is_named(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tone_file(inputs / "a440.wav", 440, 2.0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClipError) as refused:
        prepare(src, tmp_path / "out", ClipSettings())
    assert refused.value.code == "tool_missing"
    assert "ffprobe" in str(refused.value)


def test_a_hung_ffmpeg_is_killed(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tone_file(inputs / "a440.wav", 440, 2.0)
    monkeypatch.setattr(clip_preparation, "TIMEOUT_BASE_S", 0.001)
    monkeypatch.setattr(clip_preparation, "TIMEOUT_PER_AUDIO_S", 0.0)
    with pytest.raises(ClipError) as refused:
        prepare(src, tmp_path, ClipSettings())
    assert refused.value.code == "timeout"


def test_opus_is_48_khz_only() -> None:
    with pytest.raises(ValueError):
        ClipSettings(codec="opus", sample_rate=44100)


HEADERS = [b"", b"ID3\x03\x00\x00\x00\x00\x00\x00", b"\xff\xfb\x90\x64", b"OggS\x00\x02"]
HEADERS += [b"fLaC\x00\x00\x00\x22", b"RIFF\x24\x08\x00\x00WAVEfmt ", b"\x00\x00\x00\x20ftypM4A "]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    header=st.sampled_from(HEADERS),
    body=st.binary(min_size=0, max_size=4096),
    suffix=st.sampled_from([".mp3", ".wav", ".ogg", ".m4a", ".flac", ""]),
)
def test_random_bytes_only_ever_raise_clip_error(header: bytes, body: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"upload{suffix}"
        src.write_bytes(header + body)
        try:
            prepare(src, Path(tmp) / "out", ClipSettings())
        except ClipError as err:
            assert err.code and err.message_vi and err.message_en


def test_progress_printer_lines_and_in_place() -> None:
    now = [0.0]
    lines, tty = io.StringIO(), io.StringIO()
    for stream, is_tty in ((lines, False), (tty, True)):
        now[0] = 0.0
        printer = ProgressPrinter(stream, is_tty, clock=lambda: now[0])
        printer(0.3)  # within the first second: quiet
        now[0] = 5.0
        for step in range(36, 101):
            printer(step / 100)
    assert lines.getvalue().splitlines() == [f"{p}%" for p in range(30, 101, 10)]
    assert tty.getvalue().startswith("\r 36%\r 37%") and tty.getvalue().endswith("\r100%\n")
    assert "\n" not in tty.getvalue()[:-1]


def _xaso(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "clip", *args],
        check=False,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prepare_prints_the_address(inputs: Path, tmp_path: Path) -> None:
    src = tone_file(inputs / "a600.ogg", 600, 2.0, fmt="ogg")
    done = _xaso("prepare", str(src), str(tmp_path), "--codec", "opus", "--lufs", "-20")
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    path = Path(fields["path"])
    assert path.name == fields["sha256"] + ".opus" and _sha(path) == fields["sha256"]
    assert abs(int(fields["duration_ms"]) - 2000) <= 50
    assert float(fields["loudness_lufs"]) == pytest.approx(-20, abs=1.0)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["prepare", "{tmp}/noise.wav", "{tmp}/out"], "Not an audio file"),
        (["prepare", "{tmp}/noise.wav", "{tmp}/out", "--bitrate", "4"], "Invalid option"),
        (["say", " ", "{tmp}/out"], "Văn bản trống / The text is empty"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    """One line of message, then at most one of what the tool saw."""
    (tmp_path / "noise.wav").write_bytes(os.urandom(10_000))
    done = _xaso(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2
    message, *reason = done.stderr.splitlines()
    assert words in message and len(reason) <= 1
    assert all(line.startswith("xaso clip: reason: ") for line in reason)
    assert done.stdout == ""
