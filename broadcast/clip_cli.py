"""`xaso clip prepare` and `xaso clip say`: make broadcast clips by hand.

The clip modules are imported when a clip command runs, not when the parser
is built, like every other subcommand.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from broadcast.audio.clips import ClipError, ClipSettings, PreparedClip

QUIET_S = 1.0  # a clip ready within this prints no progress at all


class ProgressPrinter:
    """Percentages on stderr: in place on a terminal, a line every 10% otherwise.

    Nothing is printed for the first second, so short clips stay quiet.
    """

    def __init__(
        self,
        stream: TextIO,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.start = clock()
        self.shown = -1  # last percentage (terminal) or tens of percent (lines) printed

    def __call__(self, fraction: float) -> None:
        if self.clock() - self.start < QUIET_S:
            return
        percent = int(max(0.0, min(1.0, fraction)) * 100)
        if self.tty and percent != self.shown:
            self.stream.write(f"\r{percent:3d}%")
            self.stream.write("\n" if percent == 100 else "")
            self.shown = percent
        elif not self.tty and percent // 10 > self.shown:
            self.shown = percent // 10
            self.stream.write(f"{self.shown * 10}%\n")
        self.stream.flush()

    def close(self) -> None:
        """End an in-place line cut short, so an error starts on its own line."""
        if self.tty and 0 <= self.shown < 100:
            self.stream.write("\n")


def _settings(args: argparse.Namespace) -> ClipSettings:
    from broadcast.audio.clips import ClipError, ClipSettings
    from plumbing.validation import Faults, convert

    options = {"codec": args.codec, "bitrate_kbps": args.bitrate, "target_lufs": args.lufs}
    try:
        return convert(options, ClipSettings)
    except Faults as exc:
        first = exc.problems[0]
        raise ClipError(
            "bad_option",
            f"Tùy chọn không hợp lệ: {first.loc[0] if first.loc else ''}",
            f"Invalid option: {first.msg}",
        ) from None


def _refused(exc: ClipError) -> None:
    """The message, then what the tool saw on one line: a technician at the edge needs both."""
    print(f"xaso clip: {exc}", file=sys.stderr)
    if exc.detail:
        print(f"xaso clip: reason: {'; '.join(exc.detail.splitlines())}", file=sys.stderr)


def _report(clip: PreparedClip) -> None:
    print(f"sha256: {clip.sha256}")
    print(f"duration_ms: {clip.duration_ms}")
    print(f"bytes: {clip.bytes}")
    print(f"loudness_lufs: {clip.loudness_lufs:.1f}")
    print(f"path: {clip.path}")


def _prepare(args: argparse.Namespace) -> int:
    from broadcast.audio.clip_preparation import prepare
    from broadcast.audio.clips import ClipError

    printer = ProgressPrinter(sys.stderr)
    try:
        clip = prepare(args.input, args.out_dir, _settings(args), printer, name=args.input.name)
    except ClipError as exc:
        printer.close()
        _refused(exc)
        return 2
    _report(clip)
    return 0


def _say(args: argparse.Namespace) -> int:
    from broadcast.audio.clips import ClipError
    from broadcast.audio.tts import engine_from_config, speak_to_clip

    config = {"engine": args.engine} | ({"model": args.model} if args.model else {})
    try:
        engine = engine_from_config(config)
        clip = speak_to_clip(args.text, engine, args.out_dir, _settings(args), args.lang)
    except ClipError as exc:
        _refused(exc)
        return 2
    except ValueError as exc:
        print(f"xaso clip: {exc}", file=sys.stderr)
        return 2
    _report(clip)
    return 0


def register(subparsers: Any) -> None:
    """Add ``clip`` and its actions to the ``xaso`` command."""
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--codec", choices=["mp3", "opus"], default="mp3")
    fmt.add_argument("--bitrate", type=int, default=64, metavar="KBPS")
    fmt.add_argument("--lufs", type=float, default=-16.0, help="target loudness, EBU R128")

    clip = subparsers.add_parser("clip", help="prepare audio clips for broadcast")
    actions = clip.add_subparsers(dest="clip_command", required=True, metavar="ACTION")

    prep = actions.add_parser(
        "prepare", parents=[fmt], help="check, normalize and encode an audio file"
    )
    prep.add_argument("input", type=Path, help="MP3, WAV, OGG/Opus, WebM/Opus, M4A/AAC or FLAC")
    prep.add_argument("out_dir", type=Path, help="where <sha256>.<codec> is written")
    prep.set_defaults(func=_prepare)

    say = actions.add_parser("say", parents=[fmt], help="speak a text into a clip")
    say.add_argument("text")
    say.add_argument("out_dir", type=Path)
    say.add_argument("--engine", choices=["espeak", "piper"], default="espeak")
    say.add_argument("--model", help="piper's .onnx voice model")
    say.add_argument("--lang", default="vi")
    say.set_defaults(func=_say)
