"""Clip preparation: ``prepare()`` against the ffmpeg command line doing the same conversion.

The input is a generated 3-minute MP3 (128 kbps, stereo, 44.1 kHz: two tones
under pink noise, swelling and fading like a voice). The command-line path is
what an operator would type: loudnorm's measuring pass, then the applying pass
with the measured values, downmix, resample and encode, with the same filter
chain and encoder settings as the pipeline. The pipeline adds its probe, its
checks and a decode of the result to verify loudness and length; the ratio is
what those cost. Runs alternate (pipeline first, then ffmpeg first) after one
warm-up of each.

    .venv/bin/python -m bench.clip_prepare --repeat 3
    .venv/bin/python -m bench.clip_prepare --repeat 3 --source speech

``--source speech`` speaks a Vietnamese bulletin with espeak-ng, repeated to
the length asked, and encodes it the same way: speech is peaky, so its gain
meets the true-peak ceiling, which the tone source never does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from broadcast.audio.clip_preparation import prepare
from broadcast.audio.clips import ClipSettings

SOURCE = (
    "sine=f=220:d={s},volume=0.4[a];sine=f=330:d={s},volume=0.25[b];"
    "anoisesrc=d={s}:c=pink:a=0.3[n];[a][b][n]amix=inputs=3,"
    "volume='0.6+0.4*sin(2*PI*t/7)':eval=frame,aformat=channel_layouts=stereo"
)


BULLETIN = (
    "Thông báo của Ủy ban nhân dân xã về việc tiêm phòng cho đàn gia súc, gia cầm. "
    "Đề nghị các hộ gia đình đưa vật nuôi đến điểm tiêm tại nhà văn hoá thôn vào sáng "
    "thứ bảy tuần này. Ngày mai điện sẽ bị cắt từ bảy giờ đến mười một giờ để sửa chữa "
    "đường dây. Xin cảm ơn bà con đã lắng nghe."
)


def make_source(path: Path, seconds: int, kind: str = "tones") -> None:
    if kind == "speech":
        spoken = path.with_suffix(".wav")
        subprocess.run(
            ["espeak-ng", "-v", "vi", "-w", str(spoken), BULLETIN],
            stdin=subprocess.DEVNULL,
            check=True,
        )
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(spoken)]
        argv += ["-t", str(seconds), "-af", "aformat=channel_layouts=stereo"]
    else:
        graph = SOURCE.format(s=seconds)
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", graph]
    argv += ["-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", str(path)]
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True)


def ffmpeg_commands(src: Path, out: Path, s: ClipSettings) -> tuple[str, str]:
    """The measuring command, and the applying one as a template for what it measured."""
    target = f"I={s.target_lufs}:TP={s.true_peak_dbtp}"
    measure = (
        f"ffmpeg -nostdin -hide_banner -i {src} -map 0:a:0 "
        f"-af aformat=channel_layouts=mono,loudnorm={target}:LRA=11.0:print_format=json "
        "-f null -"
    )
    apply = (
        f"ffmpeg -nostdin -hide_banner -v error -y -i {src} -map 0:a:0 -map_metadata -1 "
        f"-af aformat=channel_layouts=mono,loudnorm={target}:LRA={{lra}}:measured_I={{input_i}}:"
        "measured_LRA={input_lra}:measured_TP={input_tp}:measured_thresh={input_thresh}:"
        f"offset={{target_offset}}:linear=true:print_format=json,aresample={s.sample_rate} "
        f"-ac 1 -ar {s.sample_rate} -c:a libmp3lame -b:a {s.bitrate_kbps}k -f mp3 {out}"
    )
    return measure, apply


def run_ffmpeg(src: Path, out: Path, s: ClipSettings) -> None:
    measure, apply = ffmpeg_commands(src, out, s)
    done = subprocess.run(
        measure.split(), stdin=subprocess.DEVNULL, capture_output=True, check=True
    )
    err = done.stderr.decode()
    stats = json.loads(err[err.rindex("{") : err.rindex("}") + 1])
    lra = min(20.0, max(11.0, float(stats["input_lra"])))
    argv = apply.format(lra=f"{lra:.2f}", **stats).split()
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True)


def ebur128(path: Path) -> float:
    argv = ["ffmpeg", "-nostdin", "-i", str(path), "-af", "ebur128=framelog=verbose"]
    err = subprocess.run(
        [*argv, "-f", "null", "-"], stdin=subprocess.DEVNULL, capture_output=True, check=True
    ).stderr.decode()
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", err)[-1])


def cpu_seconds() -> float:
    """User and system time of this process and its finished children (ffmpeg runs there)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = subprocess.run(
        ["ffmpeg", "-version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {' '.join(version.split()[:3])}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--source", choices=("tones", "speech"), default="tones")
    args = parser.parse_args()
    settings = ClipSettings()
    with tempfile.TemporaryDirectory(prefix="xaso-bench-") as tmp:
        src, out = Path(tmp) / "source.mp3", Path(tmp) / "ffmpeg.mp3"
        make_source(src, args.seconds, args.source)
        print(f"machine: {machine()}")
        print(
            f"input: {args.seconds} s of {args.source} as MP3, 128 kbps stereo 44.1 kHz,"
            f" {src.stat().st_size} bytes"
        )
        for line in ffmpeg_commands(src, out, settings):
            print(f"ffmpeg path: {line}")
        print(
            f"output: mono {settings.sample_rate} Hz {settings.codec} {settings.bitrate_kbps}k,"
            f" {settings.target_lufs} LUFS, {settings.true_peak_dbtp} dBTP"
        )

        paths: dict[str, Callable[[], object]] = {
            "pipeline": lambda: prepare(src, Path(tmp) / "clips", settings),
            "ffmpeg": lambda: run_ffmpeg(src, out, settings),
        }
        for fn in paths.values():
            fn()  # warm-up: page cache, shared libraries
        wall: dict[str, list[float]] = {name: [] for name in paths}
        cpu: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(args.repeat):
            order = list(paths) if i % 2 == 0 else list(reversed(paths))
            for name in order:
                cpu_before, started = cpu_seconds(), time.perf_counter()
                paths[name]()
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(cpu_seconds() - cpu_before)
        print(f"\n{'path':<10}{'wall s':>8}{'cpu s':>8}   wall runs (s)")
        for name, runs in wall.items():
            print(
                f"{name:<10}{statistics.median(runs):>8.2f}{statistics.median(cpu[name]):>8.2f}   "
                + ", ".join(f"{r:.2f}" for r in runs)
            )
        ratio = statistics.median(wall["pipeline"]) / statistics.median(wall["ffmpeg"])
        cpu_ratio = statistics.median(cpu["pipeline"]) / statistics.median(cpu["ffmpeg"])
        print(f"\npipeline/ffmpeg: {ratio:.2f} wall, {cpu_ratio:.2f} cpu (target at most 1.3)")
        clip = next((Path(tmp) / "clips").iterdir())
        print(f"loudness of the results: pipeline {ebur128(clip)} LUFS, ffmpeg {ebur128(out)} LUFS")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
