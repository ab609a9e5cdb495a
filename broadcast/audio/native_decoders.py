"""MP3 and Opus clips through mpg123 and opusdec, so that no decoder need wait.

Every clip a speaker gets is prepared as MP3 or Opus
(broadcast.audio.clip_preparation). Debian's ffmpeg loads some 200 shared
libraries: waiting for its clip it holds about 47 MiB RSS (38 MiB private), more
than the agent, and starting it costs ~100 ms here, which is why a spare one
waited (broadcast.audio.decode). mpg123 holds 3 MiB while it decodes and opusdec
4, and each is decoding within milliseconds of its start, so a speaker that has
them keeps no spare (docs/benchmarks.md, "A speaker with small decoders"). Their
PCM is ffmpeg's: mpg123's within one step of 16 bits, and opusdec's sample for
sample that of ffmpeg with libopus, which is what opusdec is.

A clip started part-way (a resume after an emergency, a late join, a new
volume) skips whole MP3 frames in mpg123 and the rest of the way here, to the
sample for clips that LAME encoded, as prepared ones are. What they cannot do
goes to ffmpeg: Opus started part-way (opusdec cannot seek), silence on Opus,
Opus that is not mono, MPEG-2 audio started part-way, and any other format
(the technician's WAV tone).
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from broadcast.audio.decode import FRAME_BYTES, RATE, DecoderPool, PcmPipe, PipeDecoder

log = logging.getLogger(__name__)

MP3_UNITY = 32768  # mpg123's --scale for a gain of 0 dB
ID3_HEADER = 10
MPEG1_RATES = {0: 44100, 1: 48000, 2: 32000}  # the header's sample rate index, MPEG-1
MPEG1_FRAME = 1152  # samples in an MPEG-1 Layer III frame
# Where mpg123's output starts after skipping frames: LAME's encoder delay (576) and
# the decoder's (529), which gapless decoding takes off the front, are not skipped again.
GAPLESS_DELAY = 1105


def _mp3_at(head: bytes) -> bool:
    """An MPEG audio Layer III frame header: 11 sync bits, then layer bits 01."""
    return len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2


def _mpeg1_rate(head: bytes) -> int | None:
    """The sample rate of an MPEG-1 frame header (version bits 11); None for MPEG-2."""
    return MPEG1_RATES.get((head[2] >> 2) & 3) if head[1] & 0x18 == 0x18 else None


def _look(path: Path) -> tuple[str | None, int | None]:
    """The codec, and an MP3's MPEG-1 sample rate, from the file's first bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
            if head.startswith(b"ID3") and len(head) >= ID3_HEADER:  # skip the tag
                size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
                footer = ID3_HEADER if head[5] & 0x10 else 0
                f.seek(ID3_HEADER + size + footer)
                head = f.read(4)
    except OSError:
        return None, None  # ffmpeg will say what is wrong with it
    if head.startswith(b"OggS"):
        at = head.find(b"OpusHead")
        mono = at >= 0 and len(head) > at + 9 and head[at + 9] == 1
        return ("opus" if mono else None), None
    if _mp3_at(head):
        return "mp3", _mpeg1_rate(head)
    return None, None


def sniff(path: Path) -> str | None:
    """The codec the file's first bytes say: "mp3", "opus" (mono only), or None."""
    return _look(path)[0]


def mp3_skip(start_ms: float, rate: int) -> tuple[int, int]:
    """Whole frames for mpg123 to skip, then samples of its output to drop, to start
    ``start_ms`` into an MPEG-1 clip at ``rate`` (its output is at the player's rate)."""
    start = round(start_ms * rate / 1000)
    frames = (start + GAPLESS_DELAY) // MPEG1_FRAME
    first = frames * MPEG1_FRAME - GAPLESS_DELAY if frames else 0  # where its output starts
    return frames, round((start - first) * RATE / rate)


@dataclass(frozen=True)
class NativeDecoders:
    """The small decoders this machine has (a path, or None)."""

    mpg123: str | None
    opusdec: str | None

    @classmethod
    def find(cls) -> NativeDecoders | None:
        """Those on the PATH; None when there is neither."""
        found = cls(shutil.which("mpg123"), shutil.which("opusdec"))
        return found if found.mpg123 or found.opusdec else None

    def plan(self, path: Path, gain_db: float, start_ms: float) -> tuple[list[str], int] | None:
        """The command that decodes ``path`` to the player's PCM and the bytes of its
        output to drop first, or None: ffmpeg's job."""
        kind, rate = _look(path)
        if kind == "mp3" and self.mpg123 and (start_ms <= 0 or rate is not None):
            scale = 0 if gain_db == -math.inf else round(MP3_UNITY * 10 ** (gain_db / 20))
            frames, drop = mp3_skip(start_ms, rate) if start_ms > 0 and rate else (0, 0)
            return [self.mpg123, "--quiet", "--stdout", "--mono", "--rate", str(RATE),
                    "--encoding", "s16", "--scale", str(scale), "--skip", str(frames),
                    "--", str(path)], drop * FRAME_BYTES  # fmt: skip
        if kind == "opus" and self.opusdec and gain_db != -math.inf and start_ms <= 0:
            return [self.opusdec, "--quiet", "--no-dither", "--rate", str(RATE),
                    "--gain", f"{gain_db:.2f}", "--", str(path), "-"], 0  # fmt: skip
        return None

    def open(self, path: Path, gain_db: float, start_ms: float) -> PipeDecoder | None:
        """``path`` decoding already, or None (``DecoderPool``'s native opener)."""
        planned = self.plan(path, gain_db, start_ms)
        if planned is None:
            return None
        argv, drop = planned
        package = "mpg123" if argv[0] == self.mpg123 else "opus-tools"
        return PipeDecoder(PcmPipe(argv, package=package, discard=drop), path)


def decoder_pool(*, native: bool = True, keep_s: float | None = None) -> DecoderPool:
    """A player's decoders: mpg123 and opusdec for the clips they take, and no ffmpeg
    waiting; without them (or ``native=False``), one spare ffmpeg, let go after
    ``keep_s`` idle (None: kept)."""
    found = NativeDecoders.find() if native else None
    if found is None:
        return DecoderPool(keep_s=keep_s)
    tools = " and ".join(t for t in (found.mpg123, found.opusdec) if t)
    log.info("clips decoded by %s; others by ffmpeg, started when needed", tools)
    return DecoderPool(spares=0, native=found.open)
