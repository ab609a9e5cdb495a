"""The spoken call: its words, the chime, and the clip made with the real espeak-ng and ffmpeg."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from broadcast.audio.clips import ClipSettings, PreparedClip, probe
from broadcast.audio.tts import EspeakEngine
from kiosk.voice import build_call, call_request, call_text, chime, number_words
from tests.audio_helpers import dominant_hz, lufs, read_samples


@dataclass
class CountingEngine:
    """EspeakEngine that counts its syntheses and keeps the length of the last one."""

    name: ClassVar[str] = "espeak"
    inner: EspeakEngine = field(default_factory=EspeakEngine)
    calls: int = 0
    speech_s: float = 0.0

    def synthesize(self, text: str, out_wav: Path, lang: str = "vi") -> None:
        self.calls += 1
        self.inner.synthesize(text, out_wav, lang)
        self.speech_s = probe(out_wav).duration_s


@dataclass(frozen=True)
class Built:
    engine: CountingEngine
    clip: PreparedClip
    dst: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    dst = tmp_path_factory.mktemp("clips")
    engine = CountingEngine()
    return Built(engine, build_call("A015", 2, engine, dst, ClipSettings()), dst)


@pytest.mark.parametrize(
    ("number", "counter", "spoken"),
    [
        ("A015", 2, "Xin mời số a mười lăm đến quầy số hai"),
        ("A001", 1, "Xin mời số a một đến quầy số một"),
        ("B105", 10, "Xin mời số bê một trăm linh năm đến quầy số mười"),
        ("C021", 15, "Xin mời số xê hai mươi mốt đến quầy số mười lăm"),
        ("D125", 21, "Xin mời số dê một trăm hai mươi lăm đến quầy số hai mươi mốt"),
        ("L1015", 99, "Xin mời số e lờ một nghìn không trăm mười lăm đến quầy số chín mươi chín"),
        ("S2000", 4, "Xin mời số ét xì hai nghìn đến quầy số bốn"),
        ("X7", 3, "Xin mời số ích xì bảy đến quầy số ba"),
    ],
)
def test_call_text_reads_the_number_as_a_number(number: str, counter: int, spoken: str) -> None:
    assert call_text(number, counter) == spoken


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "không"),
        (10, "mười"),
        (11, "mười một"),
        (14, "mười bốn"),
        (31, "ba mươi mốt"),
        (50, "năm mươi"),
        (55, "năm mươi lăm"),
        (100, "một trăm"),
        (101, "một trăm linh một"),
        (110, "một trăm mười"),
        (1005, "một nghìn không trăm linh năm"),
        (1100, "một nghìn một trăm"),
        (9999, "chín nghìn chín trăm chín mươi chín"),
    ],
)
def test_number_words(n: int, words: str) -> None:
    assert number_words(n) == words


@pytest.mark.parametrize(
    ("number", "counter", "complaint"),
    [
        ("a015", 2, "capital letter"),
        ("A", 2, "capital letter"),
        ("A12345", 2, "capital letter"),
        ("AB12", 2, "capital letter"),
        ("Đ015", 2, "capital letter"),
        (" A015", 2, "capital letter"),
        ("A015\n", 2, "capital letter"),
        ("A\u0661\u0665", 2, "capital letter"),
        ("A000", 2, "numbered from 1"),
        ("A015", 0, "counter"),
        ("A015", 100, "counter"),
        ("A015", -1, "counter"),
        ("A015", True, "counter"),
    ],
)
def test_bad_calls_are_refused(number: str, counter: int, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        call_text(number, counter)
    with pytest.raises(ValueError, match=complaint):
        build_call(number, counter, CountingEngine(), Path("/nonexistent"), ClipSettings())


def test_number_words_range() -> None:
    with pytest.raises(ValueError, match="0-9999"):
        number_words(10000)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_chime_is_two_rising_tones(tmp_path: Path, rate: int) -> None:
    bell = chime(rate)
    assert (bell.frame_rate, bell.channels, len(bell)) == (rate, 1, 500)
    wav = tmp_path / "chime.wav"
    bell.export(str(wav), format="wav")
    got_rate, samples = read_samples(wav)
    assert got_rate == rate
    half = rate // 4
    assert dominant_hz(samples[:half], rate) == pytest.approx(660, abs=5)
    assert dominant_hz(samples[half:], rate) == pytest.approx(880, abs=5)


def test_call_clip_is_chime_then_the_words_twice(built: Built) -> None:
    clip, speech_s = built.clip, built.engine.speech_s
    assert built.engine.calls == 1
    assert clip.path.parent == built.dst
    assert clip.path.name == f"{clip.sha256}.mp3"
    assert speech_s > 1.0
    expected_ms = 500 + 2 * speech_s * 1000 + 700
    assert clip.duration_ms == pytest.approx(expected_ms, abs=60)
    rate, samples = read_samples(clip.path, 48000)
    assert len(samples) / rate * 1000 == pytest.approx(expected_ms, abs=60)
    assert dominant_hz(samples[: rate // 4], rate) == pytest.approx(660, abs=10)
    assert dominant_hz(samples[rate // 4 : rate // 2], rate) == pytest.approx(880, abs=10)
    assert lufs(samples, rate) == pytest.approx(ClipSettings().target_lufs, abs=1.0)


def test_a_recall_reuses_the_clip_without_synthesis(built: Built) -> None:
    again = build_call("A015", 2, built.engine, built.dst, ClipSettings())
    assert again == built.clip
    assert built.engine.calls == 1


def test_a_lost_clip_is_made_again(tmp_path: Path) -> None:
    engine = CountingEngine()
    first = build_call("B007", 3, engine, tmp_path, ClipSettings(), repeats=1, gap_ms=0)
    assert first.duration_ms == pytest.approx(500 + engine.speech_s * 1000, abs=60)
    first.path.unlink()
    again = build_call("B007", 3, engine, tmp_path, ClipSettings(), repeats=1, gap_ms=0)
    assert engine.calls == 2
    assert again.path.is_file()


def test_another_counter_is_another_clip(built: Built) -> None:
    engine = CountingEngine()
    other = build_call("A015", 3, engine, built.dst, ClipSettings())
    assert engine.calls == 1
    assert other.sha256 != built.clip.sha256


def test_call_request(built: Built) -> None:
    request = call_request("A015", 2, built.clip, ts_ms=1_790_000_000_123)
    assert request.key == "call-A015-2-1790000000123"
    assert request.origin == "call"
    assert request.priority == 4
    assert request.clip_path == built.clip.path
    assert request.duration_ms == built.clip.duration_ms
    assert request.repeat == 1
    assert call_request("A015", 2, built.clip, ts_ms=1, priority=6).priority == 6
    with pytest.raises(ValueError, match="counter"):
        call_request("A015", 0, built.clip, ts_ms=1)
