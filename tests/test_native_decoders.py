"""mpg123 and opusdec for prepared clips: the same PCM as ffmpeg, no spare waiting,
and ffmpeg for what they cannot do.

Clips are made by the real clip preparation (both codecs a site can choose), and
decoded by the real programs; the reference is ffmpeg on the same file.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broadcast.audio.clip_preparation import prepare
from broadcast.audio.clips import ClipSettings
from broadcast.audio.decode import DecodeError, DecoderPool, PcmPipe, PipeDecoder
from broadcast.audio.native_decoders import NativeDecoders, sniff
from tests.player_helpers import dominant_hz, ffmpeg_children, tone


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2 s 440 Hz tone prepared as each codec, and the formats nobody prepares."""
    d = tmp_path_factory.mktemp("native")
    src = tone(d / "src.wav", 440, 2.0)
    out = {
        "mp3": prepare(src, d, ClipSettings(codec="mp3")).path,
        "mp3-44k": prepare(src, d, ClipSettings(codec="mp3", sample_rate=44100)).path,
        "opus": prepare(src, d, ClipSettings(codec="opus")).path,
        "wav": src,
    }
    for name, argv in {
        "tagged.mp3": ["-c:a", "libmp3lame", "-metadata", "title=Bản tin", "-id3v2_version", "3"],
        "stereo.opus": ["-ac", "2", "-c:a", "libopus"],
        "aac.aac": ["-c:a", "aac"],
        "mpeg2.mp3": ["-ar", "24000", "-c:a", "libmp3lame"],  # 576-sample frames
    }.items():  # fmt: skip
        out[name] = d / name
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *argv, str(out[name])],
            check=True, timeout=60,
        )  # fmt: skip
    return out


def pcm(decoder: PipeDecoder) -> np.ndarray:
    data = bytearray()
    try:
        while (chunk := decoder.read(65536, 10.0)) is not None:
            data += chunk
    finally:
        decoder.close()
    return np.frombuffer(bytes(data), dtype="<i2").astype(float)


def ffmpeg_pcm(path: Path, *decoder: str) -> np.ndarray:
    argv = ["ffmpeg", "-nostdin", "-v", "error", *decoder, "-i", str(path)]
    argv += ["-f", "s16le", "-ac", "1", "-ar", "48000", "-"]
    out = subprocess.run(argv, check=True, capture_output=True, timeout=60).stdout
    return np.frombuffer(out, dtype="<i2").astype(float)


NATIVE = NativeDecoders.find()


def native(path: Path, gain_db: float = 0.0, start_ms: float = 0) -> PipeDecoder:
    assert NATIVE is not None
    decoder = NATIVE.open(path, gain_db, start_ms)
    assert decoder is not None, f"{path.name} went to ffmpeg"
    return decoder


def test_what_the_first_bytes_say(clips: dict[str, Path], tmp_path: Path) -> None:
    assert [sniff(clips[k]) for k in ("mp3", "mp3-44k", "tagged.mp3", "opus")] == [
        "mp3", "mp3", "mp3", "opus",
    ]  # fmt: skip
    assert clips["tagged.mp3"].read_bytes().startswith(b"ID3")  # the tag was skipped
    # stereo Opus (opusdec cannot mix down), AAC's own sync word, WAV: ffmpeg's
    assert [sniff(clips[k]) for k in ("stereo.opus", "aac.aac", "wav")] == [None] * 3
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "dir.mp3").mkdir()
    assert sniff(tmp_path / "empty") is None
    assert sniff(tmp_path / "dir.mp3") is None and sniff(tmp_path / "gone.mp3") is None
    (tmp_path / "short-tag").write_bytes(b"ID3\x03\x00\x00\x7f\x7f\x7f\x7f")  # points past the end
    assert sniff(tmp_path / "short-tag") is None


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.binary(max_size=600))
def test_sniffing_any_bytes_says_a_kind_or_none_and_never_fails(
    tmp_path: Path, head: bytes
) -> None:
    path = tmp_path / "x.clip"
    path.write_bytes(head)
    assert sniff(path) in ("mp3", "opus", None)


def test_mp3_decodes_to_ffmpegs_samples(clips: dict[str, Path]) -> None:
    for name in ("mp3", "tagged.mp3"):
        ours, ref = pcm(native(clips[name])), ffmpeg_pcm(clips[name])
        assert len(ours) == len(ref) > 0, name
        assert np.max(np.abs(ours - ref)) <= 1, name  # one step of 16 bits at most


def test_a_44k_mp3_comes_out_at_the_players_rate(clips: dict[str, Path]) -> None:
    ours, ref = pcm(native(clips["mp3-44k"])), ffmpeg_pcm(clips["mp3-44k"])
    assert abs(len(ours) - len(ref)) <= 48  # resampled by mpg123: within a millisecond
    assert abs(dominant_hz(ours) - 440) < 5


def test_opus_decodes_to_libopuss_samples(clips: dict[str, Path]) -> None:
    ours, ref = pcm(native(clips["opus"])), ffmpeg_pcm(clips["opus"], "-c:a", "libopus")
    assert len(ours) == len(ref) > 0
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_the_gain_is_applied_by_the_decoder(clips: dict[str, Path], codec: str) -> None:
    full, half = pcm(native(clips[codec])), pcm(native(clips[codec], gain_db=-6.0206))
    assert np.max(np.abs(half - full / 2)) <= 2


def test_silence_the_part_way_start_and_other_formats_go_to_ffmpeg(
    clips: dict[str, Path],
) -> None:
    assert NATIVE is not None
    assert np.max(np.abs(pcm(native(clips["mp3"], gain_db=-math.inf)))) == 0
    assert NATIVE.open(clips["opus"], -math.inf, 0) is None  # opusdec has no silence
    assert NATIVE.open(clips["opus"], 0.0, 500) is None  # opusdec cannot seek
    assert NATIVE.open(clips["mpeg2.mp3"], 0.0, 500) is None  # other frames, other delays
    assert len(pcm(native(clips["mpeg2.mp3"]))) > 0  # from the start it is mpg123's
    for name in ("stereo.opus", "aac.aac", "wav"):
        assert NATIVE.open(clips[name], 0.0, 0) is None, name


@pytest.mark.parametrize("start_ms", [0.5, 10, 1000, 1234.5, 1999])
@pytest.mark.parametrize("name", ["mp3", "mp3-44k"])
def test_a_part_way_start_is_the_rest_to_the_sample(
    clips: dict[str, Path], name: str, start_ms: float
) -> None:
    """A resume, a late join, a new volume: frames skipped by mpg123, then samples here."""
    full, rest = pcm(native(clips[name])), pcm(native(clips[name], start_ms=start_ms))
    at = round(start_ms * 48)
    if name == "mp3":
        assert len(rest) == len(full) - at
        assert np.array_equal(rest, full[at:])
        return
    # 44.1 kHz, resampled by mpg123 from another phase: in step within a sample (at
    # 440 Hz, one sample early or late differs by 5.8 % of the peak, two by 11.5 %)
    assert abs(len(rest) - (len(full) - at)) <= 1
    n = min(len(rest), len(full) - at)
    assert np.max(np.abs(rest[:n] - full[at : at + n])) <= 0.07 * np.max(np.abs(full))


def test_a_pool_with_them_keeps_no_ffmpeg_and_starts_one_for_the_rest(
    clips: dict[str, Path],
) -> None:
    assert NATIVE is not None
    before = ffmpeg_children()
    pool = DecoderPool(spares=0, native=NATIVE.open)
    try:
        pool.warm()
        assert pool.waiting == 0 and ffmpeg_children() == before
        assert len(pcm(pool.open(clips["mp3"]))) > 0
        assert len(pcm(pool.open(clips["opus"]))) > 0
        assert pool.taken == {"warm": 0, "cold": 0, "native": 2}
        rest = pcm(pool.open(clips["opus"], start_ms=1000))  # ffmpeg, started for it
        assert abs(len(rest) - 48_000) <= 48 * 80  # from 1 s in, to ffmpeg's packet
        assert pcm(pool.open(clips["wav"])).size == 96_000
        assert pool.taken == {"warm": 0, "cold": 2, "native": 2}
        assert ffmpeg_children() == before  # and none left waiting after
    finally:
        pool.close()


def test_a_missing_program_or_file_is_a_clear_error(clips: dict[str, Path], tmp_path: Path) -> None:
    gone = NativeDecoders(str(tmp_path / "mpg123"), None)
    with pytest.raises(DecodeError, match="not found: install mpg123"):
        gone.open(clips["mp3"], 0.0, 0)
    mpg123 = shutil.which("mpg123")
    assert mpg123 is not None
    decoder = PipeDecoder(PcmPipe([mpg123, "--quiet", "--stdout", str(tmp_path / "x.mp3")]))
    with pytest.raises(DecodeError) as failed:
        pcm(decoder)
    assert "failed to open file" in str(failed.value)
    assert "[src/" not in str(failed.value)  # mpg123's source location is not the message
