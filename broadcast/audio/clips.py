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

import msgspec
from msgspec import Meta

from protocol.commands import ClipRef

# ffmpeg demuxers we accept; the whitelist also stops a playlist or a concat
# script posing as audio from making ffmpeg open other files or URLs.
ACCEPTED_FORMATS = "mp3,wav,ogg,mov,flac,aac,matroska"  # matroska: WebM, what browsers record
ACCEPTED_NAMES = "MP3, WAV, OGG/Opus, WebM/Opus, M4A/AAC, FLAC"
DECODE_INPUT = ["-protocol_whitelist", "file", "-format_whitelist", ACCEPTED_FORMATS]
PROBE_TIMEOUT_S = 30.0
MAX_NAME = 80  # characters of a file's name that a message repeats


class ClipSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The delivery format; one per site, so that every speaker gets the same. Built from
    outside input with ``plumbing.validation.convert``, which checks the bounds."""

    codec: Literal["mp3", "opus"] = "mp3"
    bitrate_kbps: Annotated[int, Meta(ge=8, le=320)] = 64
    sample_rate: Literal[48000, 44100] = 48000
    target_lufs: Annotated[float, Meta(ge=-40.0, le=-5.0)] = -16.0
    true_peak_dbtp: Annotated[float, Meta(ge=-9.0, le=0.0)] = -1.5
    max_input_bytes: Annotated[int, Meta(ge=1)] = 200_000_000
    max_duration_s: Annotated[float, Meta(gt=0)] = 2 * 3600.0

    def __post_init__(self) -> None:
        if self.codec == "opus" and self.sample_rate != 48000:
            raise ValueError("Opus is always 48000 Hz")


class ClipError(Exception):
    """A refused or failed clip; ``str()`` is the Vietnamese then the English message."""

    def __init__(self, code: str, message_vi: str, message_en: str, detail: str = "") -> None:
        super().__init__(f"{message_vi} / {message_en}")
        self.code = code
        self.message_vi = message_vi
        self.message_en = message_en
        self.detail = detail  # the tool's own words, for the operator's log

    def about(self, name: str) -> ClipError:
        """The same refusal naming the file it is about, as the uploader called it."""
        shown = "".join(c for c in " ".join(name.split()) if c.isprintable())[:MAX_NAME]
        if not shown:
            return self
        return ClipError(
            self.code,
            f"Tệp «{shown}»: {self.message_vi}",
            f'File "{shown}": {self.message_en}',
            self.detail,
        )


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


def hms(seconds: float, decimals: bool = False) -> str:
    """h:mm:ss, with hundredths when asked (when whole seconds would hide a difference)."""
    hundredths = round(seconds * 100) if decimals else int(seconds) * 100
    whole, cents = divmod(hundredths, 100)
    text = f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return text + (f".{cents:02d}" if decimals and cents else "")


def _seconds_vi(seconds: float) -> str:
    return f"{seconds:.2f}".replace(".", ",")


def tool_missing(tool: str) -> ClipError:
    return ClipError(
        "tool_missing",
        f"Thiếu chương trình {tool} trên máy: cài gói ffmpeg rồi thử lại",
        f"{tool} is not installed on this machine: install the ffmpeg package and try again",
    )


def timed_out(what: str) -> ClipError:
    return ClipError(
        "timeout",
        "Xử lý âm thanh quá lâu nên đã dừng: thử lại, hoặc chia thành tệp ngắn hơn",
        "Audio processing took too long and was stopped: try again, or split it into shorter files",
        what,
    )


def corrupt(detail: str, why_vi: str = "", why_en: str = "") -> ClipError:
    """Damage found while decoding; ``why_*`` says what was seen, in the user's words."""
    return ClipError(
        "corrupt",
        f"Tệp âm thanh bị hỏng hoặc bị cắt cụt{why_vi}: xuất lại tệp từ máy ghi âm rồi tải lên lại",
        f"The audio file is damaged or truncated{why_en}: "
        "export it again from the recorder and upload it again",
        detail,
    )


def not_audio(detail: str) -> ClipError:
    return ClipError(
        "not_audio",
        f"Tệp không phải âm thanh hoặc định dạng không được hỗ trợ: hãy chọn tệp {ACCEPTED_NAMES}",
        f"Not an audio file, or not a supported format: choose a file in {ACCEPTED_NAMES}",
        detail,
    )


def too_long(duration_s: float, limit_s: float) -> ClipError:
    """The real length, with hundredths when whole seconds would read as the limit itself."""
    fine = int(duration_s) <= int(limit_s)
    over = duration_s - limit_s
    over_vi = f"{_seconds_vi(over)} giây" if over < 60 else hms(over)
    over_en = f"{over:.2f} s" if over < 60 else hms(over)
    return ClipError(
        "too_long",
        f"Âm thanh dài {hms(duration_s, fine)}, vượt giới hạn {hms(limit_s)} là {over_vi}: "
        "cắt bớt hoặc chia thành nhiều tệp",
        f"The audio lasts {hms(duration_s, fine)}, {over_en} over the limit of {hms(limit_s)}: "
        "shorten it or split it into several files",
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
            "not_found",
            "Không tìm thấy tệp: kiểm tra lại tên và thư mục",
            "File not found: check its name and folder",
        ) from None
    if not path.is_file():
        raise ClipError(
            "not_audio",
            "Đây không phải là tệp: hãy chọn một tệp âm thanh",
            "This is not a file: choose an audio file",
        )
    if size == 0:
        raise ClipError(
            "empty",
            "Tệp rỗng, không có dữ liệu: hãy chọn lại tệp",
            "The file is empty: choose the file again",
        )
    if size > limit:
        raise ClipError(
            "too_large",
            f"Tệp quá lớn ({size / 1e6:.1f} MB), giới hạn {limit / 1e6:.1f} MB: "
            "nén lại (MP3) hoặc chia thành nhiều tệp",
            f"The file is too large ({size / 1e6:.1f} MB), the limit is {limit / 1e6:.1f} MB: "
            "compress it (MP3) or split it into several files",
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
    refused = not_audio(tool_tail(stderr))
    if "moov atom not found" in stderr:  # an M4A whose index never got written: cut short
        raise corrupt(tool_tail(stderr))
    if done.returncode != 0:
        raise refused
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise refused from None
    fmt: Mapping[str, Any] = data.get("format") or {}
    audio = [s for s in data.get("streams") or [] if s.get("codec_type") == "audio"]
    if not fmt or not audio:
        raise ClipError(
            "no_audio",
            "Tệp không có phần âm thanh: hãy chọn tệp ghi âm",
            "The file has no audio stream: choose a sound recording",
            tool_tail(stderr),
        )
    stream = audio[0]
    try:
        duration = float(stream.get("duration") or fmt.get("duration") or "nan")
        rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
    except ValueError:
        raise corrupt(f"unreadable stream parameters: {stream}") from None
    if rate <= 0 or channels <= 0:  # bytes that merely look like a frame header somewhere
        raise not_audio(f"{stream.get('codec_name')} stream of {rate} Hz, {channels} channels")
    if not math.isfinite(duration):
        raise corrupt(f"duration {duration}, {rate} Hz, {channels} channels")
    if duration <= 0:
        raise ClipError(
            "empty",
            "Tệp không có âm thanh nào: hãy chọn tệp ghi âm khác",
            "The file holds no audio: choose another recording",
        )
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
