"""The spoken call in the hall: a chime, then "Xin mời số A015 đến quầy số 2", twice.

A ticket is read the way Vietnamese queue systems announce it: the prefix by
its Vietnamese letter name, then the number as a number without its leading
zeros ("A015" is "a mười lăm", not "a không một năm"), and the counter as a
number ("quầy số hai"). Letters and numbers are spelled out here, not left to
the engine, so espeak-ng and a piper voice say the same words.

Numbers are read by a small reader of our own rather than ``vietnam-number``:
that package reads "015" as "không trăm mười lăm", silently drops the letter
of "A015", and spells the "lẻ" of 105 as "lẽ", a different word to a speech
engine. The reader uses "linh" (105 is "một trăm linh năm"), the form of
northern and official speech.

The speech is synthesized once and assembled with pydub (short audio built in
memory), then goes through ``broadcast.audio.clip_preparation.prepare`` like
every clip; a small index file per call lets a recall reuse the clip without
synthesizing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import msgspec
from pydub import AudioSegment
from pydub.generators import Sine

from broadcast.audio.clip_preparation import prepare
from broadcast.audio.clips import ClipError, ClipSettings, PreparedClip
from broadcast.audio.request import PlayRequest
from broadcast.audio.tts import SpeechEngine

TICKET_RE = re.compile(r"[A-Z][0-9]{1,4}")  # ASCII digits: \d would take "A١٥"
MAX_COUNTER = 99
CHIME_HZ = (660.0, 880.0)
CHIME_TONE_MS = 250
CHIME_FADE_MS = 30
CHIME_BELOW_SPEECH_DB = 3.0  # the chime announces the call; it should not drown it
_INDEX_VERSION = 1  # bump when the assembly changes, so old cached calls are not reused

_DIGITS = ("không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín")
# the names queue systems say for ticket prefixes (Vietnamese alphabet, plus F J W Z)
_LETTERS = {
    "A": "a", "B": "bê", "C": "xê", "D": "dê", "E": "e", "F": "ép", "G": "giê",
    "H": "hát", "I": "i", "J": "gi", "K": "ca", "L": "e lờ", "M": "em mờ",
    "N": "en nờ", "O": "o", "P": "pê", "Q": "quy", "R": "e rờ", "S": "ét xì",
    "T": "tê", "U": "u", "V": "vê", "W": "vê kép", "X": "ích xì", "Y": "i dài",
    "Z": "dét",
}  # fmt: skip


def _below_hundred(n: int) -> str:
    """0-99; the units after a ten take their spoken forms: mốt (21) and lăm (15, 25)."""
    tens, unit = divmod(n, 10)
    if tens == 0:
        return _DIGITS[unit]
    words = ["mười" if tens == 1 else f"{_DIGITS[tens]} mươi"]
    if unit == 1 and tens > 1:
        words.append("mốt")
    elif unit == 5:
        words.append("lăm")
    elif unit:
        words.append(_DIGITS[unit])
    return " ".join(words)


def _below_thousand(n: int, *, inner: bool) -> str:
    """0-999; ``inner`` when thousands precede it, which keeps "không trăm" (1015)."""
    hundreds, rest = divmod(n, 100)
    if hundreds == 0 and not inner:
        return _below_hundred(rest)
    words = [f"{_DIGITS[hundreds]} trăm"]
    if 0 < rest < 10:
        words.append(f"linh {_DIGITS[rest]}")
    elif rest:
        words.append(_below_hundred(rest))
    return " ".join(words)


def number_words(n: int) -> str:
    """0-9999 in Vietnamese words, as said aloud: 1015 is "một nghìn không trăm mười lăm"."""
    if not 0 <= n <= 9999:
        raise ValueError(f"{n} is outside 0-9999")
    thousands, rest = divmod(n, 1000)
    if thousands == 0:
        return _below_thousand(rest, inner=False)
    words = f"{_DIGITS[thousands]} nghìn"
    return f"{words} {_below_thousand(rest, inner=True)}" if rest else words


def _check(number: str, counter: int) -> None:
    if not isinstance(number, str) or not TICKET_RE.fullmatch(number):
        raise ValueError(
            f"ticket number {number!r} is not a capital letter and 1-4 digits, such as 'A015'"
        )
    if int(number[1:]) == 0:
        raise ValueError(f"ticket number {number!r}: tickets are numbered from 1")
    if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter {counter!r} is outside 1-{MAX_COUNTER}")


def call_text(number: str, counter: int) -> str:
    """The words spoken for ``number`` at ``counter``; ValueError on a malformed call."""
    _check(number, counter)
    ticket = f"{_LETTERS[number[0]]} {number_words(int(number[1:]))}"
    return f"Xin mời số {ticket} đến quầy số {number_words(counter)}"


def chime(rate: int = 48000) -> AudioSegment:
    """Two rising tones, the ding-dong that makes a waiting hall listen; 16-bit mono."""
    tones = [
        Sine(hz, sample_rate=rate, bit_depth=16)
        .to_audio_segment(duration=CHIME_TONE_MS, volume=-6.0)
        .fade_in(CHIME_FADE_MS // 3)
        .fade_out(CHIME_FADE_MS)
        for hz in CHIME_HZ
    ]
    return tones[0] + tones[1]


def _cache_key(number: str, counter: int, engine: SpeechEngine, parts: dict[str, object]) -> str:
    """A file stem naming the call; the digest covers whatever else shapes the audio."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"call-{number}-{counter}-{engine.name}-{digest}"


def _cached(index: Path) -> PreparedClip | None:
    """The clip an index file names, if both are still whole."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        clip = PreparedClip(**{**data, "path": Path(data["path"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    try:
        if clip.path.stat().st_size != clip.bytes:
            return None
    except OSError:
        return None
    return clip


def _write_index(index: Path, clip: PreparedClip) -> None:
    """Written under a temporary name and renamed, so a crash leaves no half index."""
    data = {**asdict(clip), "path": str(clip.path)}
    fd, name = tempfile.mkstemp(dir=index.parent, prefix=".call-", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(name, index)


def _assemble(speech_wav: Path, rate: int, repeats: int, gap_ms: int) -> AudioSegment:
    speech = AudioSegment.from_wav(str(speech_wav)).set_channels(1).set_frame_rate(rate)
    speech = speech.set_sample_width(2)
    bell = chime(rate)
    if speech.dBFS != float("-inf"):  # level the chime to the speech; loudnorm does the rest
        bell = bell.apply_gain(speech.dBFS - CHIME_BELOW_SPEECH_DB - bell.dBFS)
    gap = AudioSegment.silent(duration=gap_ms, frame_rate=rate).set_sample_width(2)
    out = bell + speech
    for _ in range(repeats - 1):
        out = out + gap + speech
    return out


def build_call(
    number: str,
    counter: int,
    engine: SpeechEngine,
    dst_dir: Path,
    settings: ClipSettings,
    *,
    repeats: int = 2,
    gap_ms: int = 700,
) -> PreparedClip:
    """The call as a prepared clip in ``dst_dir``: chime, then the words ``repeats`` times.

    A recall of the same number at the same counter, with an engine of the same
    name and the same settings, returns the clip made the first time: no
    synthesis, no ffmpeg. A change of voice within one engine needs a new
    ``dst_dir`` (or clearing its ``call-*.json`` index files).
    """
    text = call_text(number, counter)
    if repeats < 1 or gap_ms < 0:
        raise ValueError("repeats must be at least 1 and gap_ms not negative")
    parts = {
        "v": _INDEX_VERSION,
        "settings": msgspec.to_builtins(settings),
        "repeats": repeats,
        "gap_ms": gap_ms,
    }
    dst_dir.mkdir(parents=True, exist_ok=True)
    index = dst_dir / f"{_cache_key(number, counter, engine, parts)}.json"
    if (clip := _cached(index)) is not None:
        return clip
    with tempfile.TemporaryDirectory(prefix="xaso-call-") as tmp:
        speech_wav, call_wav = Path(tmp) / "speech.wav", Path(tmp) / "call.wav"
        engine.synthesize(text, speech_wav, "vi")
        if not speech_wav.is_file():
            raise ClipError(
                "tts_failed",
                "Không đọc được lời mời thành tiếng",
                "Text to speech wrote no audio for the call",
                engine.name,
            )
        _assemble(speech_wav, settings.sample_rate, repeats, gap_ms).export(
            str(call_wav), format="wav"
        )
        clip = prepare(call_wav, dst_dir, settings)
    _write_index(index, clip)
    return clip


def call_key(number: str, counter: int, called_ms: int) -> str:
    """The play key of a call: unique per call, and the same in every record of it."""
    return f"call-{number}-{counter}-{called_ms}"


def call_label(number: str, counter: int) -> str:
    return f"{number} → quầy {counter}"


def call_request(
    number: str,
    counter: int,
    clip: PreparedClip,
    ts_ms: int,
    *,
    priority: int = 4,
    max_wait_ms: int | None = None,
) -> PlayRequest:
    """What the hall speaker's player is asked to play; ``ts_ms``, when the call was made,
    makes each call's key unique; not started ``max_wait_ms`` after it is submitted, it is
    missed as expired."""
    _check(number, counter)
    return PlayRequest(
        key=call_key(number, counter, ts_ms),
        origin="call",
        priority=priority,
        duration_ms=clip.duration_ms,
        clip_path=clip.path,
        label=call_label(number, counter),
        max_wait_ms=max_wait_ms,
    )
