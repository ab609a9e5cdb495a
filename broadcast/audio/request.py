"""What the player is asked to play: one clip or one stream, from a command or a schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Origin = Literal["command", "schedule", "call"]


@dataclass(frozen=True)
class PlayRequest:
    key: str  # unique: the command id, or "<item id>@<occurrence, local ISO>"
    origin: Origin
    priority: int  # 0-9, see broadcast.levels
    duration_ms: int  # of one pass of the clip, or how long to relay the stream
    clip_path: Path | None = None  # a prepared, hash-checked file from the clip cache
    stream_url: str | None = None
    # an Authorization header for the stream's server; kept out of logs
    stream_auth: str | None = field(default=None, repr=False)
    # a relayed station's own URL, pulled without credentials when ``stream_url`` fails
    direct_url: str | None = None
    gain_db: float = 0.0
    repeat: int = 1
    at_ms: int | None = None  # planned start, epoch ms; None: as soon as possible
    label: str = ""
    item_id: str | None = None  # schedule item id, for proof of play
    occurrence: str | None = None  # local ISO time of the occurrence
    # not started this long after it was submitted: missed as "expired" (a spoken call)
    max_wait_ms: int | None = None
    # a relay's clip (cached) for while its stream is unreachable or dead air
    fallback_path: Path | None = None

    def __post_init__(self) -> None:
        if (self.clip_path is None) == (self.stream_url is None):
            raise ValueError("a play request has exactly one of clip_path or stream_url")
        if not 0 <= self.priority <= 9:
            raise ValueError("priority is 0-9")
        if self.repeat < 1 or self.duration_ms <= 0:
            raise ValueError("repeat and duration_ms must be positive")

    @property
    def total_ms(self) -> int:
        """How long all of it plays: every pass of a clip, or the stream's relay."""
        return self.duration_ms * (self.repeat if self.clip_path is not None else 1)
