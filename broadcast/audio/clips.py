"""Clips: the delivery format, what an upload must be, and the errors an operator reads.

Every clip is prepared (broadcast.audio.clip_preparation) into one delivery
format, ``ClipSettings``, one per site. An upload is checked first from its size
and headers alone, by ffprobe (``probe``). Everything that can go wrong with an
upload ends as a ``ClipError`` whose message a commune operator can read.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.commands import ClipRef

# ffmpeg demuxers we accept; the whitelist also stops a playlist or a concat
# script posing as audio from making ffmpeg open other files or URLs.
ACCEPTED_FORMATS = "mp3,wav,ogg,mov,flac,aac"
ACCEPTED_NAMES = "MP3, WAV, OGG/Opus, M4A/AAC, FLAC"
DECODE_INPUT = ["-protocol_whitelist", "file", "-format_whitelist", ACCEPTED_FORMATS]
PROBE_TIMEOUT_S = 30.0


class ClipSettings(BaseModel):
    """The delivery format; one per site, so that every speaker gets the same."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codec: Literal["mp3", "opus"] = "mp3"
    bitrate_kbps: Annotated[int, Field(ge=8, le=320)] = 64
    sample_rate: Literal[48000, 44100] = 48000
    target_lufs: Annotated[float, Field(ge=-40.0, le=-5.0)] = -16.0
    true_peak_dbtp: Annotated[float, Field(ge=-9.0, le=0.0)] = -1.5
    max_input_bytes: Annotated[int, Field(ge=1)] = 200_000_000
    max_duration_s: Annotated[float, Field(gt=0)] = 2 * 3600.0

    @model_validator(mode="after")
    def _opus_rate(self) -> ClipSettings:
        if self.codec == "opus" and self.sample_rate != 48000:
            raise ValueError("Opus is always 48000 Hz")
        return self


class ClipError(Exception):
    """A refused or failed clip; ``str()`` is the Vietnamese then the English message."""

    def __init__(self, code: str, message_vi: str, message_en: str, detail: str = "") -> None:
        super().__init__(f"{message_vi} / {message_en}")
        self.code = code
        self.message_vi = message_vi
        self.message_en = message_en
        self.detail = detail  # the tool's own words, for the operator's log


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    codec: str
    sample_rate: int
    channels: int
    format_name: str
    duration_estimated: bool = False  # from the bitrate (headerless MP3): may be off


@dataclass(frozen=True)
class PreparedClip:
    path: Path
    sha256: str
    bytes: int
    duration_ms: int
    codec: str
    sample_rate: int
    loudness_lufs: float

    def ref(self, url: str) -> ClipRef:
        """The clip as commands and schedules name it, once it is served at ``url``."""
        return ClipRef(sha256=self.sha256, url=url, bytes=self.bytes, duration_ms=self.duration_ms)


def _hms(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def tool_missing(tool: str) -> ClipError:
    return ClipError(
        "tool_missing",
        f"Thiếu chương trình {tool} trên máy (cài gói ffmpeg)",
        f"{tool} is not installed on this machine (install the ffmpeg package)",
    )


def timed_out(what: str) -> ClipError:
    return ClipError(
        "timeout",
        "Xử lý âm thanh quá lâu nên đã dừng",
        "Audio processing took too long and was stopped",
        what,
    )


def corrupt(detail: str) -> ClipError:
    return ClipError(
        "corrupt",
        "Tệp âm thanh bị hỏng hoặc bị cắt cụt",
        "The audio file is damaged or truncated",
        detail,
    )


def too_long(duration_s: float, limit_s: float) -> ClipError:
    return ClipError(
        "too_long",
        f"Âm thanh quá dài ({_hms(duration_s)}), giới hạn {_hms(limit_s)}",
        f"The audio is too long ({_hms(duration_s)}), the limit is {_hms(limit_s)}",
    )


def tool_tail(text: str, lines: int = 5) -> str:
    """The tool's last words, or its error lines when it logged any."""
    errors = [line for line in text.splitlines() if "[error]" in line or "[fatal]" in line]
    return "\n".join((errors or text.strip().splitlines())[-lines:])


def ffmpeg_input(path: Path) -> str:
    """A path ffmpeg reads as a plain file, whatever its name looks like."""
    return "file:" + str(path.resolve())


def _check_size(path: Path, limit: int) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ClipError(
            "not_found", f"Không tìm thấy tệp {path.name}", f"File not found: {path.name}"
        ) from None
    if not path.is_file():
        raise ClipError("not_audio", f"{path.name} không phải là tệp", f"{path.name} is not a file")
    if size == 0:
        raise ClipError("empty", "Tệp rỗng, không có dữ liệu", "The file is empty")
    if size > limit:
        raise ClipError(
            "too_large",
            f"Tệp quá lớn ({size / 1e6:.1f} MB), giới hạn {limit / 1e6:.1f} MB",
            f"The file is too large ({size / 1e6:.1f} MB), the limit is {limit / 1e6:.1f} MB",
        )


def ffprobe(path: Path) -> AudioInfo:
    """What the content is, read from its headers by ffprobe: no full decode."""
    args = ["ffprobe", "-hide_banner", "-v", "warning", "-protocol_whitelist", "file"]
    args += ["-format_whitelist", ACCEPTED_FORMATS, "-print_format", "json"]
    args += ["-show_format", "-show_streams", ffmpeg_input(path)]
    try:
        done = subprocess.run(
            args,
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except FileNotFoundError:
        raise tool_missing("ffprobe") from None
    except subprocess.TimeoutExpired:
        raise timed_out("ffprobe") from None
    stderr = done.stderr.decode("utf-8", "replace")
    not_audio = ClipError(
        "not_audio",
        f"Tệp không phải âm thanh hoặc định dạng không được hỗ trợ (nhận {ACCEPTED_NAMES})",
        f"Not an audio file, or not a supported format (accepted: {ACCEPTED_NAMES})",
        tool_tail(stderr),
    )
    if "moov atom not found" in stderr:  # an M4A whose index never got written: cut short
        raise corrupt(tool_tail(stderr))
    if done.returncode != 0:
        raise not_audio
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise not_audio from None
    fmt: Mapping[str, Any] = data.get("format") or {}
    audio = [s for s in data.get("streams") or [] if s.get("codec_type") == "audio"]
    if not fmt or not audio:
        raise ClipError(
            "no_audio", "Tệp không có âm thanh", "The file has no audio stream", tool_tail(stderr)
        )
    stream = audio[0]
    try:
        duration = float(stream.get("duration") or fmt.get("duration") or "nan")
        rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
    except ValueError:
        raise corrupt(f"unreadable stream parameters: {stream}") from None
    if not math.isfinite(duration) or rate <= 0 or channels <= 0:
        raise corrupt(f"duration {duration}, {rate} Hz, {channels} channels")
    if duration <= 0:
        raise ClipError("empty", "Tệp không có âm thanh nào", "The file holds no audio")
    return AudioInfo(
        duration_s=duration,
        codec=str(stream.get("codec_name", "")),
        sample_rate=rate,
        channels=channels,
        format_name=str(fmt.get("format_name", "")),
        duration_estimated="Estimating duration from bitrate" in stderr,
    )


def probe(path: Path, settings: ClipSettings | None = None) -> AudioInfo:
    """Check an upload against the limits from its size and headers alone.

    Ten hours of silence is refused here, before anything decodes it; what
    only decoding shows (damage, silence) is refused by ``prepare``.
    """
    limits = settings or ClipSettings()
    _check_size(path, limits.max_input_bytes)
    info = ffprobe(path)
    if info.duration_s > limits.max_duration_s:
        raise too_long(info.duration_s, limits.max_duration_s)
    return info
