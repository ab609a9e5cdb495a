"""Vietnamese text to a broadcast clip, offline.

espeak-ng's Vietnamese voice is on every Debian and Raspberry Pi OS machine,
so it is the default; a better voice (piper and a model file named in the
config) plugs in behind ``SpeechEngine``. Either way the speech goes through
``prepare``, so a spoken notice plays at the same loudness as any clip.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from broadcast.audio.clip_preparation import prepare
from broadcast.audio.clips import ClipError, ClipSettings, PreparedClip

MAX_TEXT_CHARS = 5000  # about six minutes of speech: a notice, not a programme
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SpeechEngine(Protocol):
    @property
    def name(self) -> str: ...

    def synthesize(self, text: str, out_wav: Path, lang: str = "vi") -> None:
        """Write ``text`` spoken in ``lang`` to the WAV file ``out_wav``."""


def _timeout_s(text: str) -> float:
    return 30.0 + 0.1 * len(text)


def _run(argv: list[str], text: str, stdin: bytes | None = None) -> None:
    """Run a synthesizer, never through a shell; every failure becomes a ClipError."""
    try:
        done = subprocess.run(
            argv,
            check=False,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=_timeout_s(text),
        )
    except FileNotFoundError:
        raise ClipError(
            "tool_missing",
            f"Thiếu chương trình đọc văn bản {argv[0]} trên máy",
            f"The speech program {argv[0]} is not installed on this machine",
        ) from None
    except subprocess.TimeoutExpired:
        raise ClipError(
            "timeout", "Đọc văn bản quá lâu nên đã dừng", "Speech synthesis took too long"
        ) from None
    if done.returncode != 0:
        raise ClipError(
            "tts_failed",
            "Không đọc được văn bản thành tiếng",
            "Text to speech failed",
            done.stderr.decode("utf-8", "replace")[-500:],
        )


@dataclass(frozen=True)
class EspeakEngine:
    name: ClassVar[str] = "espeak"
    voice: str = "vi"
    speed_wpm: int = 150
    binary: str = "espeak-ng"

    def synthesize(self, text: str, out_wav: Path, lang: str = "vi") -> None:
        voice = self.voice if lang == "vi" else lang
        argv = [self.binary, "-v", voice, "-s", str(self.speed_wpm), "-b", "1"]
        _run([*argv, "-w", str(out_wav), "--", text], text)


@dataclass(frozen=True)
class PiperEngine:
    """piper reads the text on stdin; the language is the model's own."""

    name: ClassVar[str] = "piper"
    binary: str
    model: Path

    def synthesize(self, text: str, out_wav: Path, lang: str = "vi") -> None:
        if not self.model.is_file():
            raise ClipError(
                "tool_missing",
                f"Không tìm thấy mô hình giọng đọc {self.model}",
                f"The voice model {self.model} is not there",
            )
        argv = [self.binary, "--model", str(self.model), "--output_file", str(out_wav)]
        _run(argv, text, stdin=text.encode("utf-8"))


def engine_from_config(mapping: Mapping[str, Any]) -> SpeechEngine:
    """The engine a ``[tts]`` config section names: espeak unless it says piper."""
    name = mapping.get("engine", "espeak")
    if name == "espeak":
        return EspeakEngine(
            voice=str(mapping.get("voice", "vi")),
            speed_wpm=int(mapping.get("speed_wpm", 150)),
            binary=str(mapping.get("binary", "espeak-ng")),
        )
    if name == "piper":
        if "model" not in mapping:
            raise ValueError("tts engine 'piper' needs 'model', the path of its .onnx voice")
        return PiperEngine(binary=str(mapping.get("binary", "piper")), model=Path(mapping["model"]))
    raise ValueError(f"unknown tts engine {name!r}: use 'espeak' or 'piper'")


def clean_text(text: str) -> str:
    """The text as it will be spoken, or a ClipError if there is nothing or too much."""
    cleaned = _CONTROL.sub(" ", text).strip()
    if not cleaned:
        raise ClipError("empty_text", "Văn bản trống", "The text is empty")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise ClipError(
            "text_too_long",
            f"Văn bản quá dài ({len(cleaned)} ký tự), tối đa {MAX_TEXT_CHARS}",
            f"The text is too long ({len(cleaned)} characters), at most {MAX_TEXT_CHARS}",
        )
    return cleaned


def speak_to_clip(
    text: str, engine: SpeechEngine, dst_dir: Path, settings: ClipSettings, lang: str = "vi"
) -> PreparedClip:
    cleaned = clean_text(text)
    with tempfile.TemporaryDirectory(prefix="xaso-tts-") as tmp:
        wav = Path(tmp) / "speech.wav"
        engine.synthesize(cleaned, wav, lang)
        if not wav.is_file():
            raise ClipError(
                "tts_failed",
                "Không đọc được văn bản thành tiếng",
                "Text to speech wrote no audio",
                engine.name,
            )
        return prepare(wav, dst_dir, settings)
