"""Clip preparation: an uploaded audio file becomes a broadcast clip.

Every clip leaves here mono, at one sample rate and codec, at one loudness
(EBU R128 through ffmpeg's two-pass ``loudnorm``), named by its sha256. ffmpeg
streams the audio from file to file: decoded audio never enters Python, so a
two-hour recording costs a Pi no memory. Everything that can go wrong with an
upload ends as a ``ClipError`` (broadcast.audio.clips) whose message a commune
operator can read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from broadcast.audio.clips import (
    DECODE_INPUT,
    AudioInfo,
    ClipError,
    ClipSettings,
    PreparedClip,
    corrupt,
    ffmpeg_input,
    ffprobe,
    hms,
    probe,
    timed_out,
    too_long,
    tool_missing,
    tool_tail,
)

Progress = Callable[[float], None]

SILENT_BELOW_LUFS = -60.0  # nothing there at all
MAX_GAIN_DB = 24.0  # raising a recording more than this raises its hiss into the bulletin
ANTI_PHASE_SHARE = 0.5  # stereo whose correlated seconds are mostly inverted: downmix as L-R
MIXES = {"sum": "aformat=channel_layouts=mono", "difference": "pan=mono|c0=0.5*c0-0.5*c1"}
PHASE = re.compile(r"lavfi\.aphasemeter\.phase=(-?[\d.]+)")
LOUDNESS_TOLERANCE_LU = 1.0
TRIM_ABOVE_LU = 0.5  # a miss this large gets a corrective pass
# Short peaky speech: the limiter under the trim takes back part of each added gain.
TRIM_PASSES = 3
# Peaky audio (speech) whose gain would push its peaks past the ceiling: loudnorm can't
# stay linear and its dynamic mode lands short, so it gets a plain gain under a limiter
# instead, raised by this share of the dB its peaks are cut by: what the limiter takes
# back of the loudness, measured on spoken bulletins (docs/benchmarks.md)
LIMITER_LOSS_PER_DB = 0.5
LRA_RANGE = (11.0, 20.0)  # loudnorm stays linear when the source's range fits
TIMEOUT_BASE_S = 60.0  # a pass may take this long plus one second per second of audio;
TIMEOUT_PER_AUDIO_S = 1.0  # ffmpeg runs 15x faster on a PC, so only a hang gets near it
STAGES = ((0.0, 0.35), (0.35, 0.95))  # share of progress for the measuring and encoding passes
_ENCODERS = {"mp3": ("libmp3lame", "mp3"), "opus": ("libopus", "ogg")}  # encoder, muxer


@dataclass
class _Run:
    returncode: int
    stderr: str
    out_time_s: float  # how far ffmpeg got, from its -progress report


def _ffmpeg(args: list[str], timeout_s: float, on_time: Callable[[float], None]) -> _Run:
    """Run ffmpeg, following ``-progress pipe:1``; a watchdog kills it past the deadline."""
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-v", "level+info"]
    argv += ["-progress", "pipe:1", *args]
    out_time = 0.0
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
            )
        except FileNotFoundError:
            raise tool_missing("ffmpeg") from None
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            proc.kill()

        watchdog = threading.Timer(timeout_s, kill)
        watchdog.start()
        try:
            out_time = _follow(proc.stdout, on_time)
            returncode = proc.wait()
        finally:
            watchdog.cancel()
            proc.kill()  # no-op once it has exited; stops it if _follow raised
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if fired.is_set() and returncode != 0:
            raise timed_out(" ".join(args))
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return _Run(returncode, stderr, out_time)


def _follow(stdout: IO[bytes] | None, on_time: Callable[[float], None]) -> float:
    """Report each advance of ``out_time_us`` (``out_time_ms`` is misnamed: microseconds too)."""
    out_time = 0.0
    for raw in stdout or ():
        key, _, value = raw.decode("ascii", "replace").strip().partition("=")
        seconds = int(value) / 1e6 if value.isdigit() else 0.0
        if key in ("out_time_us", "out_time_ms") and seconds > out_time:
            out_time = seconds
            on_time(out_time)
    return out_time


def _budget(duration_s: float) -> float:
    return TIMEOUT_BASE_S + TIMEOUT_PER_AUDIO_S * duration_s


def _stage(progress: Progress | None, index: int, total_s: float) -> Callable[[float], None]:
    start, end = STAGES[index]

    def report(out_time_s: float) -> None:
        if progress is not None and total_s > 0:
            progress(start + (end - start) * min(1.0, out_time_s / total_s))

    return report


def _loudnorm_json(stderr: str) -> dict[str, float]:
    """The JSON block loudnorm prints when ffmpeg ends."""
    start, end = stderr.rfind("{"), stderr.rfind("}")
    try:
        raw = json.loads(stderr[start : end + 1]) if 0 <= start < end else {}
        return {key: float(value) for key, value in raw.items() if key != "normalization_type"}
    except (ValueError, TypeError):
        return {}


def _loudnorm(
    settings: ClipSettings, measured: Mapping[str, float] | None = None, mix: str = "sum"
) -> str:
    opts = [f"I={settings.target_lufs}", f"TP={settings.true_peak_dbtp}"]
    if measured is None:
        opts.append(f"LRA={LRA_RANGE[0]}")
    else:
        lra = min(LRA_RANGE[1], max(LRA_RANGE[0], measured["input_lra"]))
        opts += [f"LRA={lra:.2f}", f"measured_I={measured['input_i']:.2f}"]
        opts += [f"measured_LRA={measured['input_lra']:.2f}"]
        opts += [f"measured_TP={min(99.0, measured['input_tp']):.2f}"]
        opts += [f"measured_thresh={measured['input_thresh']:.2f}"]
        opts += [f"offset={measured['target_offset']:.2f}", "linear=true"]
    return f"{MIXES[mix]},loudnorm=" + ":".join(opts) + ":print_format=json"


def _anti_phase(stderr: str) -> bool:
    """Most of the seconds whose channels clearly agree or oppose have them opposed.

    Summing such channels (a mono downmix) cancels the programme to nothing.
    """
    phases = [float(v) for v in PHASE.findall(stderr)]
    clear = [p for p in phases if abs(p) > 0.5]
    return bool(clear) and sum(p < 0 for p in clear) > ANTI_PHASE_SHARE * len(clear)


def _measure_pass(
    src: Path, info: AudioInfo, settings: ClipSettings, progress: Progress | None, mix: str
) -> tuple[dict[str, float], str]:
    """Decode everything once, measuring loudness (and, for stereo, the channels' phase)."""
    cap = settings.max_duration_s + 1.0  # a header that lies about length still stops here
    chain = _loudnorm(settings, mix=mix)
    if info.channels == 2 and mix == "sum":
        meter = f"asetnsamples=n={info.sample_rate}:p=0,aphasemeter=video=0,"
        chain = meter + "ametadata=mode=print:key=lavfi.aphasemeter.phase," + chain
    args = ["-xerror", *DECODE_INPUT, "-t", f"{cap:.3f}", "-i", ffmpeg_input(src)]
    args += ["-map", "0:a:0", "-af", chain, "-f", "null", "-"]
    run = _ffmpeg(args, _budget(min(info.duration_s, cap)), _stage(progress, 0, info.duration_s))
    measured = _loudnorm_json(run.stderr)
    if run.returncode != 0 or "input_i" not in measured:
        if run.out_time_s <= 0:  # ffmpeg reports its progress twice a second: often not yet
            raise corrupt(tool_tail(run.stderr))
        raise corrupt(
            tool_tail(run.stderr),
            f" (hỏng sau khoảng {hms(run.out_time_s)})",
            f" (damaged after about {hms(run.out_time_s)})",
        )
    if run.out_time_s > settings.max_duration_s:
        raise too_long(run.out_time_s, settings.max_duration_s)
    shortfall = info.duration_s - run.out_time_s
    if not info.duration_estimated and shortfall > max(0.5, 0.02 * info.duration_s):
        raise corrupt(
            f"decoded {run.out_time_s:.2f} s of the {info.duration_s:.2f} s announced",
            f" (chỉ đọc được {hms(run.out_time_s)} trên {hms(info.duration_s)})",
            f" (only {hms(run.out_time_s)} of {hms(info.duration_s)} could be read)",
        )
    return measured, run.stderr


def _measure(
    src: Path, info: AudioInfo, settings: ClipSettings, progress: Progress | None
) -> tuple[dict[str, float], str]:
    """First pass: loudness, damage, and how to downmix; refuse what is not worth raising.

    Returns the measurement and the downmix (a key of ``MIXES``).
    """
    measured, stderr = _measure_pass(src, info, settings, progress, "sum")
    mix = "sum"
    if info.channels == 2 and _anti_phase(stderr):  # one channel inverted: L-R keeps it
        mix = "difference"
        measured, _ = _measure_pass(src, info, settings, None, mix)
    loudness = measured["input_i"]
    if not loudness > SILENT_BELOW_LUFS:
        raise ClipError(
            "silent",
            "Âm thanh im lặng, không có gì để phát: kiểm tra micro rồi ghi âm lại",
            "The audio is silent, there is nothing to broadcast: check the microphone "
            "and record again",
            f"integrated loudness {loudness} LUFS",
        )
    floor = settings.target_lufs - MAX_GAIN_DB
    if loudness < floor:
        raise ClipError(
            "too_quiet",
            f"Âm thanh quá nhỏ ({loudness:.0f} LUFS, cần từ {floor:.0f} LUFS): khuếch đại lên "
            "chỉ làm to tiếng rè. Hãy ghi âm lại, nói gần micro hơn",
            f"The audio is too quiet ({loudness:.0f} LUFS, at least {floor:.0f} needed): "
            "raising it would broadcast its hiss. Record again closer to the microphone",
            f"integrated loudness {loudness} LUFS, {settings.target_lufs - loudness:.1f} dB "
            f"of gain needed, at most {MAX_GAIN_DB} allowed",
        )
    return measured, mix


def _encode(
    src: Path,
    tmp: Path,
    info: AudioInfo,
    measured: Mapping[str, float],
    *,
    settings: ClipSettings,
    progress: Progress | None,
    mix: str = "sum",
    gain_db: float | None = None,
) -> None:
    """Second pass: apply the measured gain, downmix, resample and encode.

    With ``gain_db`` the gain is that, plainly, under a peak limiter at the
    ceiling, instead of loudnorm: for audio whose peaks the gain would push
    past the ceiling (``limited_gain``).
    """
    encoder, muxer = _ENCODERS[settings.codec]
    if gain_db is None:
        chain = _loudnorm(settings, measured, mix)
    else:
        limit = 10 ** (settings.true_peak_dbtp / 20)
        chain = f"{MIXES[mix]},volume={gain_db:.2f}dB,alimiter=limit={limit:.4f}:level=false"
    chain += f",aresample={settings.sample_rate}"
    args = [*DECODE_INPUT, "-i", ffmpeg_input(src), "-map", "0:a:0", "-map_metadata", "-1"]
    args += ["-af", chain, "-ac", "1", "-ar", str(settings.sample_rate)]
    args += ["-c:a", encoder, "-b:a", f"{settings.bitrate_kbps}k"]
    args += ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", muxer, "-y", ffmpeg_input(tmp)]
    run = _ffmpeg(args, _budget(info.duration_s), _stage(progress, 1, info.duration_s))
    if run.returncode != 0:
        raise ClipError(
            "convert_failed",
            "Chuyển đổi âm thanh thất bại: thử lại, hoặc xuất tệp sang MP3 hay WAV rồi tải lên",
            "Converting the audio failed: try again, or export the file as MP3 or WAV first",
            tool_tail(run.stderr),
        )


def limited_gain(measured: Mapping[str, float], settings: ClipSettings) -> float | None:
    """The plain gain for audio that loudnorm cannot raise linearly (its peaks would pass
    the ceiling), predicted from the first pass: what reaches the target, plus what the
    limiter will take back. None: loudnorm stays linear and lands on the target itself.

    loudnorm's fallback, its dynamic mode, lands short on such audio (spoken bulletins
    by about 1 LU), and each corrective pass cost a whole encode.
    """
    gain = settings.target_lufs - measured["input_i"]
    excess = measured["input_tp"] + gain - settings.true_peak_dbtp
    lra = measured["input_lra"]
    if excess <= 0 and lra <= LRA_RANGE[1]:
        return None
    return gain + LIMITER_LOSS_PER_DB * max(0.0, excess)


def _decode_output(path: Path, duration_s: float) -> tuple[float, float]:
    """Loudness (LUFS) and length (s) of a written clip, decoded as a player would."""
    args = [*DECODE_INPUT, "-i", ffmpeg_input(path), "-map", "0:a:0"]
    args += ["-af", "ebur128=framelog=verbose", "-f", "null", "-"]
    run = _ffmpeg(args, _budget(duration_s), lambda _t: None)
    found = re.findall(r"^\s*I:\s+(-?[\d.]+|-inf) LUFS", run.stderr, re.MULTILINE)
    if run.returncode != 0 or not found:
        raise corrupt(tool_tail(run.stderr))
    return float(found[-1]), run.out_time_s


def _written(tmp: Path) -> tuple[AudioInfo, float, float]:
    """What was written: its stream, loudness (LUFS) and decoded length (s).

    The length is the decoded one: MP3 headers count the encoder's padding,
    which a gapless decoder (ffmpeg, hence the player) drops.
    """
    out = ffprobe(tmp)
    loudness, duration_s = _decode_output(tmp, out.duration_s)
    return out, loudness, duration_s


def _check(out: AudioInfo, loudness: float, settings: ClipSettings) -> None:
    """Check what was written, not what was asked for."""
    wrong = []
    if out.channels != 1 or out.sample_rate != settings.sample_rate:
        wrong.append(f"{out.channels} channels at {out.sample_rate} Hz")
    if out.codec != settings.codec:
        wrong.append(f"codec {out.codec}")
    if abs(loudness - settings.target_lufs) > LOUDNESS_TOLERANCE_LU:
        wrong.append(f"{loudness} LUFS for a target of {settings.target_lufs}")
    if wrong:
        raise ClipError(
            "convert_failed",
            "Tệp sau chuyển đổi không đạt yêu cầu: thử lại, hoặc xuất tệp sang WAV rồi tải lên",
            "The converted file is not what was asked for: try again, or export it as WAV first",
            "; ".join(wrong),
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(
    src: Path,
    dst_dir: Path,
    settings: ClipSettings,
    progress: Progress | None = None,
    *,
    name: str | None = None,
) -> PreparedClip:
    """Turn an upload into a clip in ``dst_dir`` named ``<sha256>.<codec>``.

    ``progress`` gets fractions from 0 to 1 as ffmpeg works through the file.
    The clip is written under a temporary name and renamed once checked, so a
    reader of ``dst_dir`` never sees half a clip. A refusal names the file as
    ``name`` (the uploader's name for it) when given.
    """
    try:
        return _prepare(src, dst_dir, settings, progress)
    except ClipError as exc:
        raise (exc.about(name) if name else exc) from None


def _prepare(
    src: Path, dst_dir: Path, settings: ClipSettings, progress: Progress | None
) -> PreparedClip:
    if progress is not None:
        progress(0.0)
    info = probe(src, settings)
    measured, mix = _measure(src, info, settings, progress)
    dst_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dst_dir, prefix=".clip-", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        gain = limited_gain(measured, settings)
        _encode(src, tmp, info, measured, settings=settings, progress=progress, mix=mix,
                gain_db=gain)  # fmt: skip
        out, loudness, duration_s = _written(tmp)
        for _ in range(TRIM_PASSES):
            if abs(loudness - settings.target_lufs) <= TRIM_ABOVE_LU:
                break
            if gain is None:  # loudnorm missed: its gain, then what it missed by
                gain = settings.target_lufs - measured["input_i"]
            gain += settings.target_lufs - loudness
            _encode(src, tmp, info, measured, settings=settings, progress=None, mix=mix,
                    gain_db=gain)  # fmt: skip
            out, loudness, duration_s = _written(tmp)
        _check(out, loudness, settings)
        sha = _sha256(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # mkstemp's 0600 would hide the clip from the server that hands it out
        final = dst_dir / f"{sha}.{settings.codec}"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if progress is not None:
        progress(1.0)
    return PreparedClip(
        path=final,
        sha256=sha,
        bytes=final.stat().st_size,
        duration_ms=round(duration_s * 1000),
        codec=settings.codec,
        sample_rate=out.sample_rate,
        loudness_lufs=loudness,
    )
