"""Make test audio and check what came out: tones in any format, then samples, pitch, level.

Generation goes through pydub and the real ffmpeg, so a test file is what an
uploader would send. Analysis decodes with ffmpeg and measures with numpy,
independently of the code under test: loudness here is computed from ITU-R
BS.1770, not asked of ffmpeg's loudnorm.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from pydub import AudioSegment
from pydub.generators import Sine

# pydub format and codec for each kind of upload the clip pipeline accepts
FORMATS: dict[str, tuple[str, str | None]] = {
    "mp3": ("mp3", "libmp3lame"),
    "wav": ("wav", None),
    "ogg": ("ogg", "libopus"),  # OGG/Opus
    "m4a": ("ipod", "aac"),  # M4A/AAC
    "flac": ("flac", None),
}


def _export(segment: AudioSegment, path: Path, fmt: str) -> Path:
    pydub_format, codec = FORMATS[fmt]
    segment.export(str(path), format=pydub_format, codec=codec)
    return path


def tone_file(
    path: Path,
    freq_hz: float,
    seconds: float,
    dbfs: float = -20.0,
    fmt: str = "wav",
    *,
    sample_rate: int = 44100,
    channels: int = 1,
) -> Path:
    """A sine tone whose peak is at ``dbfs`` (its RMS is 3 dB lower)."""
    tone = Sine(freq_hz, sample_rate=sample_rate).to_audio_segment(
        duration=seconds * 1000, volume=dbfs
    )
    return _export(tone.set_channels(channels), path, fmt)


def silence_file(path: Path, seconds: float, fmt: str = "wav", sample_rate: int = 44100) -> Path:
    silent = AudioSegment.silent(duration=seconds * 1000, frame_rate=sample_rate)
    return _export(silent, path, fmt)


def read_samples(path: Path, rate: int | None = None) -> tuple[int, np.ndarray]:
    """Decode a file to mono float samples in [-1, 1], at its own rate unless given one."""
    if rate is None:
        probe = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries"]
        probe += ["stream=sample_rate", "-of", "csv=p=0", str(path)]
        probed = subprocess.run(
            probe, stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=30
        )
        rate = int(probed.stdout.split()[0])
    decode = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1"]
    decode += ["-ar", str(rate), "-f", "f32le", "-c:a", "pcm_f32le", "-"]
    decoded = subprocess.run(
        decode, stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=120
    )
    return rate, np.frombuffer(decoded.stdout, dtype="<f4").astype(np.float64)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency, to a fraction of a bin (Hann window, parabolic peak)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = int(np.argmax(spectrum[1:])) + 1
    if 0 < peak < len(spectrum) - 1:
        left, mid, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        peak_f = peak + 0.5 * (left - right) / (left - 2 * mid + right)
    else:
        peak_f = float(peak)
    return float(peak_f * rate / len(samples))


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS)."""
    mean_square = float(np.mean(np.square(samples))) if len(samples) else 0.0
    return 10 * np.log10(mean_square) if mean_square > 0 else float("-inf")


# BS.1770 K-weighting at 48 kHz: a high shelf, then a high-pass (its Table 1 and 2)
_K_FILTERS = (
    (
        [1.53512485958697, -2.69169618940638, 1.19839281085285],
        [1.0, -1.69065929318241, 0.73248077421585],
    ),
    ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621]),
)


def lufs(samples: np.ndarray, rate: int = 48000) -> float:
    """Integrated loudness of mono 48 kHz samples (BS.1770 gating; read at rate=48000)."""
    if rate != 48000:
        raise ValueError("K-weighting here is for 48 kHz: read_samples(path, rate=48000)")
    n = len(samples)
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(2 * n))  # z^-1 on the FFT bins
    response = np.ones_like(z)
    for b, a in _K_FILTERS:
        response *= np.polyval(b[::-1], z) / np.polyval(a[::-1], z)
    weighted = np.fft.irfft(np.fft.rfft(samples, 2 * n) * response, 2 * n)[:n]
    block, step = int(0.4 * rate), int(0.1 * rate)
    powers = np.array(
        [np.mean(np.square(weighted[i : i + block])) for i in range(0, n - block + 1, step)]
    )
    loud = -0.691 + 10 * np.log10(powers + 1e-20)
    gated = powers[loud > -70]
    if not len(gated):
        return float("-inf")
    relative = -0.691 + 10 * np.log10(np.mean(gated)) - 10
    kept = powers[(loud > -70) & (loud > relative)]
    return float(-0.691 + 10 * np.log10(np.mean(kept)))


def sink_timeline(wav_dir: Path) -> tuple[float, np.ndarray]:
    """A WAV sink's one session: the wall instant of its first sample (ms) and its samples."""
    lines = (wav_dir / "played.jsonl").read_text("utf-8").splitlines()
    (played,) = [json.loads(line) for line in lines]
    _, samples = read_samples(wav_dir / played["file"])
    return float(played["started_ms"]), samples


def skew_ms(
    a: tuple[float, np.ndarray],
    b: tuple[float, np.ndarray],
    at_ms: float,
    *,
    window_ms: float = 1000,
    search_ms: float = 100,
    rate: int = 48000,
) -> tuple[float, float]:
    """How much later ``b`` plays what ``a`` plays at ``at_ms`` (ms, on the sinks' own
    timestamps, to a sample), and how alike the two are there (1.0: the same audio)."""

    def index(start_ms: float, at: float) -> int:
        return round((at - start_ms) * rate / 1000)

    n, reach = round(window_ms * rate / 1000), round(search_ms * rate / 1000)
    i, j = index(a[0], at_ms), index(b[0], at_ms) - reach
    if i < 0 or j < 0 or i + n > len(a[1]) or j + n + 2 * reach > len(b[1]):
        raise ValueError(f"the sinks do not both hold {window_ms} ms around {at_ms}")
    ref, other = a[1][i : i + n], b[1][j : j + n + 2 * reach]
    size = 1 << (len(other) + n).bit_length()  # by FFT: a wide search stays cheap
    spectrum = np.fft.rfft(other, size) * np.conj(np.fft.rfft(ref, size))
    scores = np.fft.irfft(spectrum, size)[: len(other) - n + 1]
    best = int(np.argmax(scores))
    match = other[best : best + n]
    alike = float(scores[best] / (np.linalg.norm(ref) * np.linalg.norm(match) or 1.0))
    return (best - reach) * 1000 / rate, alike
