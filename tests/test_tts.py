"""Text to speech: the real espeak-ng, and piper faked at its binary only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from broadcast.audio.clip_preparation import limited_gain
from broadcast.audio.clips import ClipError, ClipSettings, probe
from broadcast.audio.tts import (
    MAX_TEXT_CHARS,
    EspeakEngine,
    PiperEngine,
    engine_from_config,
    speak_to_clip,
)
from tests.audio_helpers import lufs, read_samples, rms_dbfs

CALL = "Xin mời số A015 đến quầy số 2"
ROOT = Path(__file__).resolve().parent.parent

# A stand-in for the piper binary: reads the text on stdin, writes a WAV whose
# length follows the text, and keeps what it was given for the test to read.
FAKE_PIPER = """#!{python}
import math, struct, sys, wave
from pathlib import Path
args = sys.argv[1:]
model, out = args[args.index("--model") + 1], args[args.index("--output_file") + 1]
text = sys.stdin.buffer.read().decode("utf-8")
Path(out).with_name("received.txt").write_text(model + "\\n" + text, encoding="utf-8")
if "FAIL" in text:
    sys.exit("piper: cannot speak this")
rate, n = 22050, int(22050 * (0.5 + 0.05 * len(text)))
with wave.open(out, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 300 * i / rate))) for i in range(n)
    ))
"""


@pytest.fixture
def fake_piper(tmp_path: Path) -> tuple[Path, Path]:
    binary = tmp_path / "bin" / "piper"
    binary.parent.mkdir()
    binary.write_text(FAKE_PIPER.format(python=sys.executable))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    model = tmp_path / "vi_VN-vais1000-medium.onnx"
    model.write_bytes(b"not really a model")
    return binary, model


def test_espeak_says_the_call_in_vietnamese(tmp_path: Path) -> None:
    wav = tmp_path / "call.wav"
    EspeakEngine().synthesize(CALL, wav)
    info = probe(wav)
    assert info.duration_s > 1.0
    _rate, samples = read_samples(wav)
    assert rms_dbfs(samples) > -40, "speech, not silence"
    # speech pauses between words: a good share of 20 ms frames is much quieter than the loudest
    frames = samples[: len(samples) // 441 * 441].reshape(-1, 441)
    energy = (frames**2).mean(axis=1)
    assert (energy < energy.max() / 100).mean() > 0.05


def test_spoken_call_becomes_a_normalized_clip(tmp_path: Path) -> None:
    clip = speak_to_clip(CALL, EspeakEngine(), tmp_path, ClipSettings())
    assert clip.path.name == f"{clip.sha256}.mp3"
    assert clip.duration_ms > 1000
    rate, samples = read_samples(clip.path, 48000)
    assert lufs(samples, rate) == pytest.approx(-16.0, abs=1.0)


def test_text_that_looks_like_options_is_spoken_not_obeyed(tmp_path: Path) -> None:
    wav = tmp_path / "dash.wav"
    EspeakEngine().synthesize("--help; rm -rf $HOME `id`", wav)
    assert probe(wav).duration_s > 1.0


def test_piper_gets_the_text_on_stdin(tmp_path: Path, fake_piper: tuple[Path, Path]) -> None:
    binary, model = fake_piper
    engine = engine_from_config({"engine": "piper", "binary": str(binary), "model": str(model)})
    assert isinstance(engine, PiperEngine) and engine.name == "piper"
    clip = speak_to_clip(CALL, engine, tmp_path / "clips", ClipSettings(codec="opus"))
    assert clip.path.suffix == ".opus"
    assert abs(clip.duration_ms - 1000 * (0.5 + 0.05 * len(CALL))) <= 50


def test_piper_receives_exact_utf8_text(tmp_path: Path, fake_piper: tuple[Path, Path]) -> None:
    binary, model = fake_piper
    out = tmp_path / "speech.wav"
    PiperEngine(binary=str(binary), model=model).synthesize(CALL + "\nđường ống", out)
    assert (tmp_path / "received.txt").read_text(encoding="utf-8") == (
        f"{model}\n{CALL}\nđường ống"
    )


def test_piper_failure_and_missing_model(tmp_path: Path, fake_piper: tuple[Path, Path]) -> None:
    binary, model = fake_piper
    with pytest.raises(ClipError) as failed:
        PiperEngine(str(binary), model).synthesize("FAIL", tmp_path / "x.wav")
    assert failed.value.code == "tts_failed" and "cannot speak" in failed.value.detail
    with pytest.raises(ClipError) as missing:
        PiperEngine(str(binary), tmp_path / "absent.onnx").synthesize(CALL, tmp_path / "x.wav")
    assert missing.value.code == "tool_missing"


def test_missing_espeak_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClipError) as missing:
        speak_to_clip(CALL, EspeakEngine(binary="no-such-espeak"), tmp_path, ClipSettings())
    assert missing.value.code == "tool_missing" and "no-such-espeak" in str(missing.value)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty_text"),
        (" \n\t\x00 ", "empty_text"),
        ("a" * (MAX_TEXT_CHARS + 1), "text_too_long"),
    ],
    ids=["empty", "blank", "too long"],
)
def test_text_refused_before_any_synthesis(tmp_path: Path, text: str, code: str) -> None:
    with pytest.raises(ClipError) as refused:
        speak_to_clip(text, EspeakEngine(binary="no-such-espeak"), tmp_path, ClipSettings())
    assert refused.value.code == code
    assert " / " in str(refused.value)


def test_engine_from_config() -> None:
    default = engine_from_config({})
    assert isinstance(default, EspeakEngine) and default.name == "espeak"
    slow = engine_from_config({"engine": "espeak", "speed_wpm": 120})
    assert isinstance(slow, EspeakEngine) and slow.speed_wpm == 120
    with pytest.raises(ValueError, match="model"):
        engine_from_config({"engine": "piper"})
    with pytest.raises(ValueError, match="unknown tts engine"):
        engine_from_config({"engine": "festival"})


def test_cli_say(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "clip", "say", CALL, str(tmp_path)],
        check=False,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"LANG": "C"},
    )
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert Path(fields["path"]).is_file() and int(fields["duration_ms"]) > 1000


def test_a_long_spoken_bulletin_reaches_the_loudness_target(tmp_path: Path) -> None:
    """Peaky synthetic speech would send loudnorm into its dynamic mode, which lands short;
    the gain predicted from the first pass brings it within tolerance."""
    text = (
        "Xin chào bà con. Đây là bản tin thử nghiệm của Đài truyền thanh xã. "
        "Bà con chú ý theo dõi lịch tiêm phòng cho gia súc vào sáng thứ Hai tới."
    )
    settings = ClipSettings()
    clip = speak_to_clip(text, EspeakEngine(), tmp_path, settings)
    rate, samples = read_samples(clip.path)
    assert abs(lufs(samples, rate) - settings.target_lufs) <= 1.0
    assert clip.duration_ms > 5000


def test_the_gain_for_peaky_audio_is_predicted_from_the_first_pass() -> None:
    settings = ClipSettings()  # -16 LUFS, -1.5 dBTP
    quiet_peaky = {"input_i": -18.7, "input_tp": 0.03, "input_lra": 1.9}
    gain = limited_gain(quiet_peaky, settings)
    # 2.7 dB to the target pushes the peaks 4.23 dB past the ceiling: half of that more
    assert gain == pytest.approx(2.7 + 0.5 * 4.23)
    # loudnorm stays linear (and exact) when the peaks have room and the range fits
    assert limited_gain({"input_i": -20.0, "input_tp": -8.0, "input_lra": 6.0}, settings) is None
    # a range too wide for loudnorm's linear mode: a plain gain too, no limiting expected
    wide = limited_gain({"input_i": -20.0, "input_tp": -8.0, "input_lra": 25.0}, settings)
    assert wide == pytest.approx(4.0)
